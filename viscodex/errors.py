"""Error types. Each message names the problem: which file, which tensor, which shapes."""


class ViscodexError(Exception):
    """Base class: the CLI prints these as one clear message and exits non-zero."""


class SourceError(ViscodexError):
    """A source (local folder or Hub repo) is missing, corrupt or of the wrong kind."""


class RecipeError(ViscodexError):
    """A recipe field or command-line option is invalid."""


class CompatibilityError(ViscodexError):
    """The trio cannot be merged; `problems` lists every mismatch found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            f"the sources are not compatible ({len(problems)} problem{'s' * (len(problems) != 1)}):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


class MergeError(ViscodexError):
    """The merge itself failed (e.g. a NaN/Inf in an output tensor)."""
