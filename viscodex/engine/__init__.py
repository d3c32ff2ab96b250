"""The merge engine: recipe -> sources -> plan -> methods -> merge -> writer."""
