"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class DnwError(Exception):
    """An error the user can fix; its message says what to do."""


class UnknownNameError(DnwError, KeyError):
    """A registry was asked for a name nobody registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(DnwError):
    """Two plugins registered the same name in one registry."""


class FingerprintMismatchError(DnwError):
    """Weights made for one architecture/LoRA/layout were applied to another."""
