"""Issue 27: the table layout is declared once (schema.py's columns) and every consumer follows it.

Each test names the consumer a new dataset would silently miss if it kept a list of its own: the README block,
empty(), the long export, the query records and the HTTP models.
"""
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from nasbench_ptb import export, layout_doc, records, schema
from nasbench_ptb.fidelity import at_epoch
from nasbench_ptb.space import space

ROOT = Path(__file__).resolve().parents[1]


def test_the_layout_block_of_readme_is_the_generated_one():
    block = layout_doc.layout_text()
    for doc in ("README.md",):
        text = (ROOT / doc).read_text()
        assert f"{layout_doc.BEGIN}\n```\n{block}\n```\n{layout_doc.END}" in text, (
            f"{doc}: the table layout block is stale; run `python -m nasbench_ptb.layout_doc --update`")
    # every declared dataset is in the block with its shape and its description
    for part in ("standalone", "ws"):
        for name in schema.layout(part):
            assert schema.doc(part, name) in block and f"{name} [" in block


def test_update_docs_rewrites_only_the_block_and_refuses_a_file_without_one(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{layout_doc.BEGIN}\nold text\n{layout_doc.END}\nafter\n")
    assert layout_doc.update_docs([doc]) == [str(doc)]
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old text" not in text
    assert layout_doc.layout_text() in text and layout_doc.update_docs([doc]) == []  # idempotent
    (tmp_path / "none.md").write_text("no block\n")
    with pytest.raises(ValueError, match="no generated layout block"):
        layout_doc.update_docs([tmp_path / "none.md"])


def test_empty_fills_every_declared_dataset_with_its_dtype_and_its_not_yet_trained_value():
    sa = schema.Standalone.empty(5, [3, 4], [0.5, 1.0])
    assert sa.seeds.tolist() == [3, 4] and sa.seeds.dtype == np.int64 and sa.epochs.dtype == np.float64
    for name, (dims, integer) in schema.layout("standalone").items():
        value = getattr(sa, name)
        assert value.shape == tuple({"N": 5, "S": 2, "C": 2}[d] for d in dims), name
        assert (value.dtype.kind == "i") == integer, name
    assert np.isnan(sa.valid_ppl).all() and np.isnan(sa.test_ppl).all()
    assert (sa.status == schema.Status.MISSING).all() and sa.status.dtype == np.int8
    ws = schema.WeightSharing.empty(5, [0], [1.0], [100], [1, 3])
    assert ws.valid_ppl.shape == (1, 1, 5) and ws.samples.dtype == np.int64 and (ws.samples == 0).all()
    assert ws.valid_tokens.tolist() == [100] and ws.archs.tolist() == [1, 3]
    assert schema.WeightSharing.empty(5, [0], [1.0], [100]).archs is None


def test_every_declared_dataset_reaches_the_long_export(tmp_path):
    from helpers import synthetic_table

    cols = export.long_columns(synthetic_table(tmp_path / "t.h5"))
    for part in ("standalone", "ws"):
        for name in schema.layout(part):
            if name not in ("seeds", "epochs", "archs"):
                assert name in cols, f"{part}/{name} is not exported"


def test_the_records_and_the_http_models_carry_every_per_run_dataset():
    curve = {f.name for f in dataclasses.fields(records.Curve)}
    assert curve == {"epochs", *schema.columns("standalone", "NSC")}
    seed = {f.name for f in dataclasses.fields(records.SeedResult)}
    assert set(schema.columns("standalone", "NS")) <= seed
    ws = {f.name for f in dataclasses.fields(records.WsSeedResult)}
    assert {*schema.columns("ws", "SCN"), *schema.columns("ws", "SN")} <= ws
    pytest.importorskip("fastapi")
    from nasbench_ptb.server import models

    for record, model in ((records.Curve, models.CurveModel), (records.SeedResult, models.SeedResultModel),
                          (records.WsSeedResult, models.WsSeedModel), (records.Standalone, models.StandaloneModel),
                          (records.ArchRecord, models.ArchModel)):
        assert list(model.model_fields) == [f.name for f in dataclasses.fields(record)], model.__name__
    # a float that does not exist (NaN) is sent as null, so every float field of the models is nullable
    run = models.SeedResultModel.model_validate({"seed": 0, "status": "diverged", "curve": None,
                                                 **dict.fromkeys(_floats(records.SeedResult))})
    assert run.test_ppl is None
    with pytest.raises(ValueError):  # and the rest is typed: a status is a string
        models.SeedResultModel.model_validate({**run.model_dump(), "status": None})


def _floats(record) -> list[str]:
    return [f.name for f in dataclasses.fields(record) if f.type in (float, "float")]


def test_a_cut_keeps_a_per_run_final_only_where_its_checkpoint_is_still_the_best():
    """Every [N, S] final is measured at the best-validation checkpoint: at a lower fidelity it exists only
    where the best checkpoint so far is that one (hand-built: run 0 best at epoch 1, run 1 best at epoch 2)."""
    sp = space("2node")
    sa = schema.Standalone.empty(sp.size, [0], [1.0, 2.0])
    sa.valid_ppl[0, 0] = [100.0, 120.0]  # best at epoch 1: the test ppl was measured there
    sa.valid_ppl[1, 0] = [130.0, 110.0]  # best at epoch 2
    sa.best_epoch[:2, 0] = [1.0, 2.0]
    sa.test_ppl[:2, 0] = [95.0, 105.0]
    sa.status[:2] = schema.Status.OK
    cut = at_epoch(schema.Table(sp, "custom", {}, sa), 1.0).standalone
    assert cut.test_ppl[0, 0] == 95.0 and np.isnan(cut.test_ppl[1, 0])
    assert cut.best_epoch[:2, 0].tolist() == [1.0, 1.0] and cut.valid_ppl.shape == (sp.size, 1, 1)
    assert cut.valid_ppl[:2, 0, 0].tolist() == [100.0, 130.0]


def test_a_dataset_added_later_reads_as_not_measured_from_a_table_written_before_it(tmp_path, monkeypatch):
    """The shipped tables predate any dataset added to the layout: they stay readable (NaN there), while a
    dataset that is not declared ``added`` is still required."""
    sp = space("2node")
    sa = schema.Standalone.empty(sp.size, [0], [1.0])
    sa.valid_ppl[0, 0, 0] = 100.0
    sa.status[0] = schema.Status.OK
    schema.write(schema.Table(sp, "custom", {}, sa), tmp_path / "old.h5")

    @dataclasses.dataclass(frozen=True)
    class Later(schema.Standalone):
        test_loss: np.ndarray = schema.column("NS", "f8", "test cross-entropy", added=True)

    monkeypatch.setitem(schema.GROUPS, "standalone", Later)
    read = schema.read(tmp_path / "old.h5").standalone
    assert isinstance(read, Later) and read.test_loss.shape == (sp.size, 1) and np.isnan(read.test_loss).all()
    assert read.valid_ppl[0, 0, 0] == 100.0 and "test_loss" in schema.optional("standalone")

    @dataclasses.dataclass(frozen=True)
    class Required(schema.Standalone):
        test_loss: np.ndarray = schema.column("NS", "f8", "test cross-entropy")

    monkeypatch.setitem(schema.GROUPS, "standalone", Required)
    with pytest.raises(schema.TableError, match="lacks the dataset.s. test_loss"):
        schema.read(tmp_path / "old.h5")
