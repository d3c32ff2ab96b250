"""Every error class of viscodex, in one place. Each message names the problem (which file, which
tensor, which shapes, which option) and the fix; the CLI prints it as one line and exits 2."""


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


class DataError(ViscodexError):
    """The training data as a whole cannot be used (missing file, nothing valid, bad template)."""


class TrainError(ViscodexError):
    """A fine-tuning run cannot start or continue (bad option, no vision tower, bad checkpoint)."""


class EvalError(ViscodexError):
    """An evaluation cannot run (unknown task, missing dataset, missing browser...)."""


class CardError(ViscodexError):
    """The model card cannot be generated or does not validate."""


class PublishError(ViscodexError):
    """The folder cannot be published, or the Hub refused it."""


class SpaceError(ViscodexError):
    """The Space cannot be assembled or published."""


class UploadError(ViscodexError):
    """An uploaded file cannot be used as an image; the message says why."""


class AppError(ViscodexError):
    """The comparison app cannot start: no models configured, unknown variant, bad setting."""


class DemoError(ViscodexError):
    """`viscodex demo` will not write where asked (a foreign folder, another configuration)."""


class OutputError(ViscodexError):
    """--out cannot be written safely (overlaps a source, holds foreign files, is locked...)."""


class SandboxUnavailable(ViscodexError):
    """The kernel layers the code sandbox needs are missing, and unsafe execution was not allowed."""

