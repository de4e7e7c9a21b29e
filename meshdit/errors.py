"""Errors meshdit raises on bad input. Each names the cause and the fix.

Every error derives from MeshditError so callers can catch the family; the message always says which
input, config value or graph node is at fault and, for graph nodes, the model source line it came from.
"""


class MeshditError(Exception):
    """Base class of every error meshdit raises on purpose."""


class CaptureError(MeshditError):
    """torch.export could not capture the module with the given example inputs."""


class ConfigError(MeshditError):
    """A mesh or parallel config value is malformed or does not fit the mesh or the model."""


class UnsupportedOpError(MeshditError):
    """A graph node has no device lowering and host fallback is disabled."""


class SpecializationError(MeshditError):
    """A data-dependent value cannot be specialised, or a call breaks a specialisation the program was built on."""


class InputMismatchError(MeshditError):
    """A program was called with inputs that differ from those it was lowered for."""


class NumericsError(MeshditError):
    """A lowered program disagrees with its torch module on the example inputs (PCC below the dtype's threshold)."""


def __getattr__(name):
    """TraceInputMismatchError (an InputMismatchError: a traced call's inputs differ in shape or dtype from those its
    trace was captured with) lives in the torch-free device runtime, which is copied beside saved programs; it is
    re-exported here lazily because importing the runtime package from this module would be circular."""
    if name == "TraceInputMismatchError":
        from .runtime.device import TraceInputMismatchError

        return TraceInputMismatchError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def node_location(node) -> str:
    """'name (file.py:123 `source text`)' for an FX node, using the stack trace torch.export recorded."""
    trace = node.meta.get("stack_trace") if hasattr(node, "meta") else None
    where = ""
    if trace:
        lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
        frames = [i for i, line in enumerate(lines) if line.startswith("File ")]
        if frames:
            head = lines[frames[-1]]
            code = lines[frames[-1] + 1] if frames[-1] + 1 < len(lines) else ""
            try:
                path = head.split('"')[1]
                lineno = head.split("line ")[1].split(",")[0]
                short = "/".join(path.split("/")[-2:])
                where = f"{short}:{lineno}" + (f" `{code}`" if code else "")
            except IndexError:
                where = head
    name = getattr(node, "name", str(node))
    return f"{name} ({where})" if where else name
