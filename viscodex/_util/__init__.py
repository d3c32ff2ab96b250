"""Small helpers every layer may use (they import nothing else from viscodex): cache dirs, byte
sizes, Hub references, versions, quiet transformers, ZeroGPU sizing."""
