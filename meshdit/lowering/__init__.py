"""Stage 4, lowering: ModelGraph -> TT-NN program IR -> Python source.

    ir = lower_graph(model_graph, mesh_shape, act_dtype="bfloat16", weight_dtype="bfloat8_b")
    source = emit_source(ir)
"""

from .emit import emit_source
from .program_ir import ProgramIR, TensorSpec
from .lower import lower_graph

__all__ = ["lower_graph", "emit_source", "ProgramIR", "TensorSpec"]
