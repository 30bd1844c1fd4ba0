from kdnas_deploy.pipeline.stages import StageRunner, inputs_key


def _artifact_work(tmp_path, calls: list[int]):
    """A stage's work: counts its calls in ``calls`` and writes one artifact file."""

    def work():
        calls.append(1)
        out = tmp_path / "artifact.txt"
        out.write_text("x")
        return {"artifact": str(out)}

    return work


def test_stage_reused_when_inputs_unchanged(tmp_path):
    calls: list[int] = []
    work = _artifact_work(tmp_path, calls)

    runner = StageRunner(tmp_path, echo=lambda s: None)
    first = runner.run("build", {"a": 1}, work)
    second = StageRunner(tmp_path, echo=lambda s: None).run("build", {"a": 1}, work)
    assert calls == [1]
    assert not first.cached and second.cached
    assert second.outputs == first.outputs
    StageRunner(tmp_path, echo=lambda s: None).run("build", {"a": 2}, work)
    assert calls == [1, 1]


def test_stage_rerun_when_artifact_missing(tmp_path):
    calls: list[int] = []
    work = _artifact_work(tmp_path, calls)

    StageRunner(tmp_path, echo=lambda s: None).run("s", {"a": 1}, work)
    (tmp_path / "artifact.txt").unlink()
    StageRunner(tmp_path, echo=lambda s: None).run("s", {"a": 1}, work)
    assert calls == [1, 1]


def test_key_is_order_independent():
    assert inputs_key({"a": 1, "b": [1, 2]}) == inputs_key({"b": [1, 2], "a": 1})
    assert inputs_key({"a": 1}) != inputs_key({"a": 2})
