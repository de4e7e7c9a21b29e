"""Parameter names of the ttnn 0.81.1 ops meshdit emits: (positional parameters, keyword-only parameters).

Taken from the verbatim signatures in ../shared/research/ttnn_api_and_mock.md (Appendix A). Ops marked
`assumed` have no verbatim record there; they follow the same unary/reduction binding, and the conformance
harness (real ttnn on a mocked mesh) is what settles them.
"""

_UNARY = (("input_tensor",), ("memory_config", "output_tensor", "sub_core_grids"))  # ttnn.silu verbatim
_BINARY = (("input_tensor_a", "input_tensor_b"),
           ("fast_and_approximate_mode", "dtype", "memory_config", "output_tensor", "activations",
            "input_tensor_a_activations", "input_tensor_b_activations", "sub_core_grids", "sub_device_id"))
_NORM = (("input_tensor",), ("epsilon", "weight", "bias", "residual_input_tensor", "memory_config",
                             "program_config", "compute_kernel_config"))
_MATMUL_KW = ("transpose_a", "transpose_b", "memory_config", "dtype", "program_config", "activation",
              "compute_kernel_config", "core_grid", "output_tile", "optional_output_tensor", "global_cb",
              "sub_device_id")

SIGNATURES = {
    "ttnn.linear": (("input_tensor_a", "input_tensor_b"), ("bias",) + _MATMUL_KW),
    "ttnn.matmul": (("input_tensor_a", "input_tensor_b"), _MATMUL_KW),
    # help(ttnn.experimental.minimal_matmul) in the conformance venv (ttnn 0.81.1)
    "ttnn.experimental.minimal_matmul": (("input_tensor", "weight_tensor", "bias_tensor"),
                                         ("fused_activation", "config", "memory_config", "dtype",
                                          "compute_kernel_config", "fuse_swiglu")),
    # help(ttnn.experimental.dit_minimal_matmul_addcmul_fused) (research notes, Appendix A)
    "ttnn.experimental.dit_minimal_matmul_addcmul_fused": (
        ("matmul_input_tensor", "matmul_weight_tensor", "scalar", "addcmul_input_tensor1", "addcmul_input_tensor2",
         "bias_tensor"), ("config", "memory_config", "dtype", "compute_kernel_config")),
    "ttnn.layer_norm": (_NORM[0], _NORM[1] + ("recip_tensor",)),
    "ttnn.rms_norm": _NORM,
    "ttnn.gelu": (("input_tensor",), ("fast_and_approximate_mode", "memory_config", "output_tensor",
                                      "sub_core_grids")),
    "ttnn.silu": _UNARY,
    "ttnn.add": _BINARY,
    "ttnn.multiply": _BINARY,
    "ttnn.subtract": _BINARY,  # assumed: same binding as add / multiply
    "ttnn.divide": _BINARY,  # assumed
    "ttnn.addcmul": (("input_a", "input_b", "input_c"), ("value", "memory_config", "output_tensor")),
    "ttnn.softmax": (("input_tensor", "dim"), ("memory_config", "compute_kernel_config", "numeric_stable")),
    "ttnn.reshape": (("input_tensor", "shape"), ("memory_config", "pad_value", "reshape_tile_mode",
                                                 "sub_core_grids", "skip_padding_fill")),
    "ttnn.permute": (("input_tensor", "dims"), ("memory_config", "pad_value")),
    "ttnn.slice": (("input_tensor", "starts", "ends", "slice_step"),
                   ("memory_config", "output_tensor", "pad_value", "slice_dim", "num_devices", "sub_core_grids")),
    "ttnn.concat": (("tensors", "dim"), ("memory_config", "output_tensor", "groups", "sub_core_grids")),
    "ttnn.pad": (("input_tensor", "padding", "value"), ("use_multicore", "memory_config", "sub_core_grids")),
    "ttnn.repeat": (("input_tensor", "repeat_dims"), ("memory_config", "optional_output_tensor")),
    **{f"ttnn.{name}": _BINARY for name in ("gt", "ge", "lt", "le", "eq", "ne", "logical_and", "logical_or")},  # assumed
    "ttnn.leaky_relu": (("input_tensor", "negative_slope"), ("memory_config", "output_tensor")),  # assumed
    "ttnn.clamp": (("input_tensor", "min", "max"), ("memory_config", "output_tensor")),  # assumed
    "ttnn.to_layout": (("tensor", "layout", "dtype", "memory_config", "sub_core_grids", "pad_value"), ()),
    "ttnn.where": (("predicate", "true_value", "false_value"), ("memory_config", "output_tensor", "sub_core_grids")),
    "ttnn.typecast": (("input_tensor", "dtype"), ("memory_config", "output_tensor", "sub_core_grids")),
    "ttnn.mean": (("input_tensor", "dim", "keepdim"), ("memory_config", "compute_kernel_config")),  # assumed
    "ttnn.sum": (("input_tensor", "dim", "keepdim"), ("memory_config", "compute_kernel_config")),  # assumed
    "ttnn.transformer.scaled_dot_product_attention": (
        ("input_tensor_q", "input_tensor_k", "input_tensor_v"),
        ("attn_mask", "is_causal", "scale", "sliding_window_size", "memory_config", "program_config",
         "compute_kernel_config", "attention_sink")),
    "ttnn.transformer.split_query_key_value_and_split_heads": (
        ("input_tensor", "kv_input_tensor"),
        ("num_heads", "num_kv_heads", "transpose_key", "memory_config", "use_falcon7b_backend")),
    "ttnn.transformer.concatenate_heads": (("input_tensor",), ("memory_config",)),
    "ttnn.experimental.rotary_embedding_llama": (("input_tensor", "cos_cache", "sin_cache", "trans_mat"),
                                                 ("is_decode_mode", "memory_config", "compute_kernel_config")),
    "ttnn.transformer.joint_scaled_dot_product_attention": (
        ("input_tensor_q", "input_tensor_k", "input_tensor_v", "joint_tensor_q", "joint_tensor_k", "joint_tensor_v"),
        ("joint_strategy", "program_config", "scale", "compute_kernel_config")),
    "ttnn.all_gather": (("input_tensor", "dim"), (
        "cluster_axis", "memory_config", "output_tensor", "subdevice_id", "sub_core_grids", "num_links", "topology",
        "chunks_per_sync", "num_workers_per_link", "num_buffers_per_channel", "use_l1_small_for_semaphores")),
    "ttnn.reduce_scatter": (("input_tensor", "dim"), (
        "cluster_axis", "subdevice_id", "memory_config", "intermediate_memory_config", "output_tensor", "num_links",
        "topology", "chunks_per_sync", "num_workers_per_link", "num_buffers_per_channel", "compute_kernel_config",
        "use_l1_small_for_semaphores")),
    "ttnn.all_reduce": (("input_tensor",), ("cluster_axis", "subdevice_id", "memory_config", "num_links",
                                            "topology")),
    # the third overload (cluster_axis + mesh_device form), verbatim
    "ttnn.experimental.all_gather_async": (
        ("input_tensor", "dim", "cluster_axis", "mesh_device", "topology", "multi_device_global_semaphore"),
        ("persistent_output_tensor", "num_links", "memory_config", "subdevice_id", "use_optimal_ccl_for_llama",
         "use_broadcast", "barrier_semaphore", "sub_core_grids", "num_workers_per_link", "num_buffers_per_channel")),
    "ttnn.experimental.reduce_scatter_minimal_async": (
        ("input_tensor", "persistent_output_buffers", "dim", "multi_device_global_semaphore"),
        ("barrier_semaphore", "num_links", "memory_config", "intermediate_memory_config", "topology",
         "subdevice_id", "cluster_axis", "chunks_per_sync", "num_workers_per_link", "num_buffers_per_channel",
         "compute_kernel_config")),
    # the second overload (cluster_axis + mesh_device form), verbatim
    "ttnn.experimental.all_reduce_async": (
        ("input_tensor", "cluster_axis", "mesh_device", "barrier_semaphores", "rs_global_semaphores",
         "ag_global_semaphores", "math_op"),
        ("memory_config", "topology", "num_links", "subdevice_id")),
    "ttnn.mesh_partition": (("input_tensor", "dim", "cluster_axis"), ("memory_config",)),
    "ttnn.transformer.ring_joint_scaled_dot_product_attention": (
        ("input_tensor_q", "input_tensor_k", "input_tensor_v", "joint_tensor_q", "joint_tensor_k", "joint_tensor_v"),
        ("persistent_output_buffer_k", "persistent_output_buffer_v", "joint_strategy", "logical_n", "logical_l",
         "program_config", "scale", "compute_kernel_config", "dim", "multi_device_global_semaphore", "num_links",
         "cluster_axis", "mesh_device", "topology", "subdevice_id", "ccl_core_grid_offset", "use_column_major_ccl",
         "is_causal", "is_balanced")),
    # assumed: from tt-metal's all_to_all_async_generic binding (input_tensor, in_dim, out_dim, *, ...)
    "ttnn.experimental.all_to_all_async_generic": (("input_tensor", "in_dim", "out_dim"), (
        "persistent_output_buffer", "num_links", "memory_config", "topology", "subdevice_id", "cluster_axis")),
    "ttnn.layer_norm_pre_all_gather": (("input_tensor",), (
        "dtype", "residual_input_tensor", "compute_kernel_config", "program_config", "memory_config", "recip_tensor",
        "fast_and_approximate_mode")),
    "ttnn.layer_norm_post_all_gather": (("input_tensor", "stats"), (
        "epsilon", "weight", "bias", "memory_config", "compute_kernel_config", "program_config", "dtype")),
    "ttnn.rms_norm_pre_all_gather": (("input_tensor",), (
        "dtype", "residual_input_tensor", "compute_kernel_config", "program_config", "memory_config",
        "use_2d_core_grid", "fast_and_approximate_mode")),
    "ttnn.rms_norm_post_all_gather": (("input_tensor", "stats"), (
        "epsilon", "weight", "bias", "memory_config", "compute_kernel_config", "program_config", "dtype",
        "use_2d_core_grid")),
    "host_call": (("op_name", "args", "kwargs", "dtypes"), ()),
}
for _name in ("neg", "exp", "sin", "cos", "tanh", "sigmoid", "rsqrt", "sqrt", "reciprocal", "abs", "relu"):
    SIGNATURES[f"ttnn.{_name}"] = _UNARY  # assumed: unary eltwise binding as ttnn.silu

# The device runtime's trace calls (meshdit/runtime/device.py), verbatim from Appendix A; copy_host_to_device_tensor
# has no entry there and is taken from the installed ttnn 0.81.1 binding's __nb_signature__:
#   def copy_host_to_device_tensor(host_tensor: Tensor, device_tensor: Tensor, cq_id: QueueId | None = None) -> None
RUNTIME_SIGNATURES = {
    "ttnn.begin_trace_capture": (("mesh_device",), ("cq_id",)),
    "ttnn.end_trace_capture": (("mesh_device", "trace_id"), ("cq_id",)),
    "ttnn.execute_trace": (("mesh_device", "trace_id"), ("cq_id", "blocking")),
    "ttnn.release_trace": (("mesh_device", "trace_id"), ()),
    "ttnn.copy_host_to_device_tensor": (("host_tensor", "device_tensor", "cq_id"), ()),
}
