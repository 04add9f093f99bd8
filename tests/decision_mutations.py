"""Named mutations of the decision points a wrong verdict hangs on, and the tests that must kill each.

Each mutation replaces one exact snippet of one source file (it must occur exactly once: a refactor that moves
the code fails the check loudly, and the mutation is updated with it).  ``tests/test_mutations.py`` (zoo tier,
which CI runs) applies each to a copy of ``src/`` and runs its tests against the copy: each must fail.
``python tests/decision_mutations.py`` prints the table of a run without pytest's capture.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Mutation", "MUTATIONS"]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # under src/pytest_cvdnn/
    old: str
    new: str
    tests: tuple[str, ...]  # node ids that must fail with the mutation in place
    why: str  # what a user would get if this shipped


MUTATIONS: tuple[Mutation, ...] = (
    Mutation("nonfinite-nan-only", "verdicts.py",
             "if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():",
             "if np.issubdtype(out.dtype, np.floating) and np.isnan(out).any():",
             ("tests/test_hostile_sessions.py::test_an_output_that_is_inf_everywhere_fails_output_spec",),
             "a model whose outputs are +inf everywhere passes every item"),
    Mutation("topk-margin-halved", "compare.py",
             "margin = 2 * max(tol.atol, tol.rtol * abs(kth), tol.tie_rel",
             "margin = 1 * max(tol.atol, tol.rtol * abs(kth), tol.tie_rel",
             ("tests/test_compare.py::test_the_near_tie_margin_is_what_both_runners_may_move_together",),
             "near-ties of random-weight softmaxes judged: false top-1 disagreements"),
    Mutation("caution-over-classes", "compare.py",
             "spread = float(np.max(ref.max(axis=0) - ref.min(axis=0)))",
             "spread = float(np.max(ref.max(axis=-1) - ref.min(axis=-1)))",
             ("tests/test_compare.py::test_input_insensitivity_is_judged_over_the_samples_not_the_classes",),
             "the caution about outputs that ignore the input given to the wrong models"),
    Mutation("caution-never", "checks_outputs.py",
             "flat = input_insensitive(exhibit[0], exhibit[2], dep.settings.tolerance)", "flat = []",
             ("tests/test_hostile_sessions.py::test_a_pass_on_an_output_that_ignores_its_input_carries_a_caution",),
             "a parity pass that cannot tell a right graph from a wrong one, said to be a pass"),
    Mutation("equivalence-floor", "verdicts.py", "if worst > relative * max(scale, 1e-30):",
             "if worst > relative * max(scale, 1.0):",
             ("tests/test_decisions.py::test_rewrite_equivalence_judges_tiny_outputs_on_their_own_scale",),
             "a rewrite that changes tiny outputs offered as equivalent"),
    Mutation("prove-outputs-only", "fixes.py",
             "problem = _equivalent(dep, path, samples) or _same_tensors(dep, model, fixed, path, changed, samples)",
             "problem = _equivalent(dep, path, samples)",
             ("tests/test_decisions.py::test_a_rewrite_that_changes_a_tensor_behind_a_flat_output_is_not_offered",),
             "a wrong fix shipped as fixed.onnx when the outputs are flat"),
    Mutation("bundle-links-allowed", "manifest.py", "if path.is_symlink() or (path.exists()", "if (path.exists()",
             ("tests/test_decisions.py::test_a_link_inside_a_bundle_is_refused_even_to_a_file_of_the_bundle",),
             "a bundle whose files are links replayed"),
    Mutation("child-stage-always-forward", "runners/isolated.py", 'resp.setdefault("stage", "load")',
             'resp["stage"] = "forward"',
             ("tests/test_decisions.py::test_a_child_that_cannot_load_says_load_and_one_that_cannot_run_says_forward",),
             "an importer failure on a target blamed on the runtime"),
    Mutation("determinism-allclose", "verdicts.py", "if not np.array_equal(a, b, equal_nan=True):",
             "if not np.allclose(a, b, atol=1e-5, equal_nan=True):",
             ("tests/test_cache.py::test_warm_run_replays_auxiliary_cv2_outputs_and_still_compares_them",),
             "a net that answers differently on a second load called deterministic"),
    Mutation("relative-tolerance-unbounded", "compare.py",
             "if name in (\"rtol\", \"srtol\", \"tie_rel\") and value >= RELATIVE_LIMIT:",
             "if name in (\"rtol\", \"srtol\", \"tie_rel\") and value > 1e300:",
             ("tests/test_gate_integrity.py::test_a_relative_tolerance_that_accepts_the_signal_itself_is_refused",),
             "--cvdnn-srtol=1e308 makes every parity item unable to fail"),
    Mutation("folder-ownership-ignored", "ownership.py", "if dest.exists() and not owned_folder(dest):",
             "if False:",
             ("tests/test_ownership.py::test_a_folder_is_replaced_only_when_the_plugin_wrote_it",
              "tests/test_hostile_sessions.py::test_a_destination_the_user_owns_is_a_usage_error_and_nothing_changes"),
             "a user's folder replaced by a bundle"),
    Mutation("input-folder-replaceable", "ownership.py", "if real == given:", "if False:",
             ("tests/test_ownership.py::test_every_path_relation_to_an_input_is_judged",),
             "--cvdnn-save-bundle=. deletes the SavedModel it checks"),
    Mutation("report-over-any-file", "ownership.py", "if path.exists() and not owned_report(path):", "if False:",
             ("tests/test_ownership.py::test_a_report_replaces_only_a_report",),
             "--cvdnn-report overwrites a file the user owns"),
    Mutation("onnx-beside-onnx-ignored", "plugin.py",
             "        _refuse_onnx_without_keras(base.onnx, models[0], config.rootpath)", "        pass",
             ("tests/test_hostile_sessions.py::test_an_onnx_beside_an_onnx_model_is_refused_not_ignored",),
             "the artifact to ship never opened, the gate green"),
    Mutation("declared-outputs-unchecked", "graph.py", "    check_declared_outputs(path, model)", "    pass",
             ("tests/test_hostile_sessions.py::test_a_graph_the_full_check_rejects_fails_convert_with_a_clear_message",),
             "an ONNX whose interface contradicts its graph passes"),
    Mutation("strict-inference-skipped", "graph.py", "    check_strict_inference(path, model)\n", "",
             ("tests/test_hostile_sessions.py::test_a_graph_the_full_check_rejects_fails_convert_with_a_clear_message",),
             "a graph onnx.checker's full check rejects (an If branch of the wrong shape) passes"),
    Mutation("fused-none-passed-on", "runners/cv2dnn.py", "        if missing:", "        if False:",
             ("tests/test_gate_integrity.py::test_a_tensor_cv2_gives_no_value_for_is_named_never_pickled",),
             "OpenCV's None for a fused tensor becomes an object array: an unreadable failure"),
    Mutation("cache-reads-special-files", "cache.py", "return stat.S_ISREG(os.lstat(path).st_mode)",
             "return os.path.exists(path)",
             ("tests/test_cache_healing.py::test_special_files_in_the_cache_are_never_opened",),
             "a FIFO in the cache hangs the session for ever"),
    Mutation("crash-unsafe-local-load", "core.py", "            self._crash_safe(onnx_path, names, output_names)\n",
             "",
             ("tests/test_hostile_sessions.py::"
              "test_a_graph_whose_import_crashes_opencv_fails_its_load_item_not_the_session",),
             "a graph that segfaults OpenCV's importer ends the session: no summary, no report"),
    Mutation("image-budget-unchecked", "budget.py", "    if need > budget:\n        raise CvdnnError(\n"
             "            f\"{option}:", "    if False:\n        raise CvdnnError(\n            f\"{option}:",
             ("tests/test_gate_integrity.py::test_a_huge_photo_is_refused_before_it_is_decoded",),
             "a 20000x20000 photo decoded and resized in the session: 11 GB, a segfault"),
    Mutation("blob-judge-either", "checks_inputs.py", "stats.ok and pixels <= pp.pixel_limit(want)",
             "stats.ok or pixels <= pp.pixel_limit(want)",
             ("tests/test_decision_verdicts.py::test_a_blob_a_fraction_of_a_pixel_level_off_fails_preprocessing",),
             "a blob with the wrong mean passes when the resize hides it under a pixel level"),
    Mutation("swap-by-flags", "preprocess.py", "or _order(declared) == _order(expected):",
             "or declared.swap_rb == expected.swap_rb:",
             ("tests/test_decision_verdicts.py::test_the_channel_order_of_the_blob_decides_swap_rb_not_the_flag",),
             "an RGB application told nothing (or the wrong swapRB) about its BGR blob"),
    Mutation("empty-net-layer-by-op-type", "load.py",
             "layer = keras_layer_for(node, dep.keras_layer_names) if dep.has_keras else None",
             "layer = keras_layer_for(op_type, dep.keras_layer_names) if dep.has_keras else None",
             ("tests/test_opencv_versions.py::"
              "test_keras_layer_that_51_cannot_import_is_named_and_the_remedy_search_runs",),
             "OpenCV 5.1's unimportable node named without the Keras layer to change"),
    Mutation("keras-cv2dnn-blame-wrong-pair", "checks_outputs.py",
             'in_opencv = not dep.parity("onnxruntime", "cv2dnn")', 'in_opencv = not dep.parity("keras", "onnxruntime")',
             ("tests/test_decision_verdicts.py::"
              "test_keras_against_a_targets_cv2dnn_is_blamed_on_the_half_that_diverges",),
             "OpenCV's divergence blamed on the ONNX file, with a fix about --cvdnn-onnx"),
    Mutation("first-divergence-elementwise-only", "diagnose.py", "                if not stats.ok:\n"
             "                    origin = _origin(", "                if stats.mismatches == 0:\n                    continue\n"
             "                if True:\n                    origin = _origin(",
             ("tests/test_decision_verdicts.py::"
              "test_a_divergence_below_atol_is_localised_by_the_rule_relative_to_the_signal",),
             "a failure the verdict sees (srtol, NaN, top-k) that localisation calls a build-up across nodes"),
    Mutation("effect-said-only-when-harmless", "checks_inputs.py",
             '{_top1_text(effect)}" if effect is not None else ""', '{_top1_text(effect)}" if effect else ""',
             ("tests/test_decision_verdicts.py::test_a_failing_blob_says_how_much_it_moves_the_predictions",),
             "a wrong blob that changes the predictions never says so (the clause printed only when harmless)"),
    Mutation("agreement-blame-first-stage", "checks_agreement.py",
             "return sorted(found, key=lambda row: -row[3])", "return found",
             ("tests/test_agreement.py::test_the_resize_that_flips_predictions_is_found_blamed_and_fixed",),
             "the agreement failure blames the first stage that differs (the decoder) instead of the one that "
             "restores the predictions (the resize)"),
    Mutation("task-level-ignores-classes", "compare.py",
             "and self.signal_ok and all(t.ok for t in self.topk))",
             "and self.signal_ok and (all(t.ok for t in self.topk) or not self.elementwise))",
             ("tests/test_compare.py::test_task_level_judgement_ignores_elements_but_not_classes_or_the_signal",),
             "a quantized model that predicts other classes passes on its small signal error"),
)


if __name__ == "__main__":  # the table, for the README
    for m in MUTATIONS:
        print(f"| {m.name} | `{m.file}` | {m.why} | {', '.join(t.split('::')[-1] for t in m.tests)} |")
