"""Every SGLang internal the worker relies on exists, with the parameters and reads we expect, in the
pinned SGLang: an upgrade that moves one fails here, in one place, instead of deep in a run."""

from __future__ import annotations

import importlib
import inspect

import pytest

# (module, attribute, parameter names the project passes or overrides; None = existence only)
FUNCTIONS = [
    ("sglang.srt.speculative.ngram_worker", "eagle_sample",
     ["verify_input", "batch", "logits_output", "grammar_mask"]),
    ("sglang.srt.speculative.ngram_worker", "NgramCorpus", None),
    ("sglang.kernels.ops.speculative.spec_tree", "verify_tree_greedy_func",
     ["predicts", "accept_index", "accept_token_num", "candidates", "retrieve_index", "retrieve_next_token",
      "retrieve_next_sibling", "target_predict", "topk"]),
    ("sglang.kernels.ops.speculative.reconstruct_tree", "reconstruct_indices_from_tree_mask_func", None),
    ("sglang.srt.sampling.penaltylib.repetition_penalty", "apply_scaling_penalties", None),
    ("sglang.srt.arg_groups.speculative_hook", "_handle_ngram", None),
    ("sglang.srt.speculative.spec_registry", "CustomSpecAlgo", None),
    ("sglang.srt.speculative.spec_registry", "get_spec", None),
    ("sglang.srt.plugins.hook_registry", "HookRegistry", None),
    ("sglang.srt.plugins.hook_registry", "HookType", None),
    ("sglang.srt.managers.overlap_utils", "FutureMap", None),
    # plain decode steps (adapter/plain_decode.py)
    ("sglang.kernels.ops.speculative.cache_locs", "assign_extend_cache_locs_func",
     ["req_pool_indices", "req_to_token", "start_offset", "end_offset", "batch_size", "draft_token_num", "device"]),
    ("sglang.srt.model_executor.forward_batch_info", "ForwardBatch.init_new",
     ["batch", "model_runner", "capture_hidden_mode", "return_hidden_states_before_norm"]),
    ("sglang.srt.managers.tp_worker", "TpModelWorker.forward_batch_generation",
     ["batch", "forward_batch", "pp_proxy_tensors", "is_verify"]),
    ("sglang.srt.model_executor.model_runner", "ModelRunner.sample", ["logits_output", "forward_batch"]),
    ("sglang.srt.speculative.spec_utils", "record_stream_for_v2_verify", ["batch", "verify_input", "fwd_stream"]),
    ("sglang.srt.managers.utils", "GenerationBatchResult", None),
    # engine lifecycle (adapter/engine_lifecycle.py): the shutdown's tree kill, the signal handlers
    ("sglang.srt.entrypoints.engine", "kill_process_tree", ["parent_pid", "include_parent", "skip_pid", "wait_timeout"]),
    ("sglang.srt.entrypoints.engine", "Engine.shutdown", None),
    # CPU engines start their children from a preloaded forkserver (adapter/cpu_hooks.py)
    ("sglang.srt.entrypoints.engine", "_set_envs_and_config", ["server_args"]),
    # the worker's report in /server_info (adapter/internal_state.py)
    ("sglang.srt.managers.scheduler_components.internal_state", "SchedulerInternalStateController._add_speculative",
     None),
    # data-parallel dispatch of sibling groups (adapter/dp_dispatch.py)
    ("sglang.srt.managers.data_parallel_controller", "DataParallelController.dispatching_with_trace",
     ["req", "refresh_load_budget"]),
    ("sglang.srt.managers.data_parallel_controller", "DataParallelController.maybe_external_dp_rank_routing",
     ["req"]),
    ("sglang.srt.managers.io_struct", "TokenizedGenerateReqInput", None),
    ("sglang.srt.runtime_context", "get_parallel", None),
    # tensor-parallel agreement (adapter/tp_sync.py)
    ("sglang.srt.distributed.parallel_state", "get_tp_group", None),
    ("sglang.srt.distributed.parallel_state", "GroupCoordinator.all_gather_object", ["obj"]),
    # early-stop aborts of Engine requests (adapter/abort.py)
    ("sglang.srt.managers.tokenizer_manager", "TokenizerManager.abort_request", ["rid"]),
    # server-side early stop of n > 1 requests (adapter/early_stop_hook.py)
    ("sglang.srt.managers.tokenizer_manager", "TokenizerManager._handle_batch_output", ["recv_obj"]),
    ("sglang.srt.managers.tokenizer_manager", "ReqState.get_text", None),
    ("sglang.srt.managers.io_struct", "BatchStrOutput", None),
    # many servers (sgl_consensus/router.py): SGLang's router package, pinned in requirements/dev.txt
    ("sglang_router.launch_router", "launch_router", ["args"]),
    ("sglang_router.launch_router", "parse_router_args", ["args"]),
]

# NGRAMWorker methods the worker overrides or calls, with the parameters it passes.
NGRAM_METHODS = {
    "forward_batch_generation": ["self", "batch", "on_publish", "pp_proxy_tensors"],
    "_prepare_draft_tokens": ["self", "batch"],
    "_prepare_for_speculative_decoding": ["self", "batch"],
    "_update_ngram_corpus": ["self", "batch"],
    "alloc_memory_pool": None,
    "clear_cache_pool": ["self"],
}

# What the per-step width swap relies on: NGRAM's step code reads these from the worker each step.
NGRAM_STEP_READS = ["self.draft_tokens_batch[bs]", "self.tree_mask_batch[bs]", "self.positions_batch[bs]",
                    "self.retrieve_indexes_batch[bs]", "self.retrieve_next_token_batch[bs]",
                    "self.retrieve_next_sibling_batch[bs]", "self.draft_token_num"]


@pytest.mark.parametrize("module, name, params", FUNCTIONS, ids=[f"{m}.{n}" for m, n, _ in FUNCTIONS])
def test_sglang_symbol_exists_with_expected_parameters(module, name, params):
    obj = importlib.import_module(module)
    for part in name.split("."):  # Class.method names resolve through the class
        obj = getattr(obj, part, None)
        assert obj is not None, f"{module}.{name} is gone"
    if params is not None:
        got = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
        assert got[: len(params)] == params, f"{module}.{name}{inspect.signature(obj)}"


@pytest.mark.parametrize("method", list(NGRAM_METHODS))
def test_ngram_worker_methods_we_override(method):
    from sglang.srt.speculative.ngram_worker import NGRAMWorker

    function = getattr(NGRAMWorker, method, None)
    assert function is not None, f"NGRAMWorker.{method} is gone"
    params = NGRAM_METHODS[method]
    if params is not None:
        assert list(inspect.signature(function).parameters)[: len(params)] == params


def test_ngram_step_reads_what_the_width_swap_sets():
    from sglang.srt.speculative.ngram_worker import NGRAMWorker

    source = inspect.getsource(NGRAMWorker._prepare_for_speculative_decoding)
    missing = [read for read in NGRAM_STEP_READS if read not in source]
    assert not missing, f"NGRAM's step no longer reads {missing}: the per-step width would not apply"
    assert "eagle_sample(" in inspect.getsource(NGRAMWorker.forward_batch_generation)


def test_dp_controller_honours_a_routed_rank_and_keeps_server_args():
    from sglang.srt.managers import data_parallel_controller as dpc
    from sglang.srt.managers.io_struct import TokenizedGenerateReqInput

    assert "routed_dp_rank" in inspect.getsource(dpc.DataParallelController.maybe_external_dp_rank_routing)
    assert "self.server_args" in inspect.getsource(dpc.DataParallelController.__init__)
    assert "routed_dp_rank" in TokenizedGenerateReqInput.__struct_fields__


def test_stream_executor_fields_the_endpoint_reads():
    """adapter/frontend_fork.py: a fork's branches carry ``fork_start_text_pos``, ``text_`` and
    ``arguments``."""
    from sglang.lang.interpreter import StreamExecutor

    fork = inspect.getsource(StreamExecutor.fork)
    assert "fork_start_text_pos" in fork and "text_" in fork
    assert "self.arguments" in inspect.getsource(StreamExecutor.__init__)


def test_tokenizer_manager_signal_handler_class_is_replaceable():
    """adapter/engine_lifecycle.py swaps the handler class for one that spares the caller."""
    from sglang.srt.managers import tokenizer_manager

    source = inspect.getsource(tokenizer_manager)
    assert "signal_handler_class" in source and "running_phase_sigquit_handler" in source


def test_cuda_graphs_fall_back_to_eager_at_other_widths():
    """Steps narrower than the captured width must not replay the full-width graph."""
    from sglang.srt.model_executor.runner import decode_cuda_graph_runner
    from sglang.srt.speculative.ngram_info import NgramVerifyInput

    assert "self.num_tokens_per_req = draft_token_num" in inspect.getsource(NgramVerifyInput.__init__)
    assert "num_tokens_per_req != self.captured_req_width" in inspect.getsource(
        decode_cuda_graph_runner.DecodeCudaGraphRunner.can_run_graph)


def test_tokenizer_manager_reads_of_the_early_stop_hook():
    """adapter/early_stop_hook.py: n > 1 children are shallow copies of one request object; finished
    outputs are queued on ``state.out_list``; request states carry ``obj``, ``finished``, ``out_list``."""
    import dataclasses

    from sglang.srt.managers import tokenizer_manager as tm

    batch = inspect.getsource(tm.TokenizerManager._handle_batch_request)
    assert "tmp_obj = copy.copy(objs[i])" in batch
    handle = inspect.getsource(tm.TokenizerManager._handle_batch_output)
    assert "state.out_list.append(out_dict)" in handle and "self.rid_to_state.get(rid" in handle
    fields = {f.name for f in dataclasses.fields(tm.ReqState)}
    assert {"obj", "finished", "out_list"} <= fields
