import hashlib

import numpy as np
import pytest

from nasbench_ptb.space import OPS, Genotype, SearchSpace, id_of_choices, parse, space


def test_sizes_and_names():
    assert len(space("2node")) == 32 and len(space("3node")) == 384
    assert space(4).size == 24 * 4**4 and space("8node").name == "8node"
    with pytest.raises(ValueError, match="unknown search space"):
        space("twonode")
    with pytest.raises(ValueError, match="at least one node"):
        SearchSpace(0)


def test_paper_id_examples():
    sp = space("2node")
    assert sp.from_id(0).canonical == "tanh:0|tanh:0"
    assert sp.from_id(4).canonical == "tanh:0|tanh:1"
    assert sp.from_id(31).canonical == "identity:0|identity:1"
    # id = 8·slot_1 + slot_2 for two nodes
    g = parse("sigmoid:0|relu:1")
    assert g.id == 8 * (4 * 0 + 2) + (4 * 1 + 1)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_enumeration_is_in_id_order_and_round_trips(n):
    sp = space(n)
    genos = list(sp)
    assert [g.id for g in genos] == list(range(sp.size))
    assert len({g.canonical for g in genos}) == sp.size
    for g in genos[:: max(1, sp.size // 50)]:
        assert parse(g.canonical) == g and parse(g.darts_repr()) == g and parse(list(g.nodes)) == g


def test_parse_forms_agree():
    darts = "Genotype(recurrent=[('tanh', 0), ('sigmoid', 0)], concat=range(1, 3))"
    assert parse(darts) == parse("tanh:0|sigmoid:0") == parse([("tanh", 0), ("sigmoid", 0)])
    assert parse(" tanh:0 | sigmoid:0 ").canonical == "tanh:0|sigmoid:0"


def test_hash_is_sha256_prefix_of_canonical():
    g = parse("tanh:0|sigmoid:0")
    assert g.hash == hashlib.sha256(b"tanh:0|sigmoid:0").hexdigest()[:16]
    assert len({g.hash for g in space(3)}) == 384


def test_iso_classes():
    assert len({g.iso_hash for g in space(2)}) == 26
    assert len({g.iso_hash for g in space(3)}) == 188
    # renumbering the two children of s0 gives the same cell; a chain does not
    assert parse("tanh:0|relu:0").iso_hash == parse("relu:0|tanh:0").iso_hash
    assert parse("tanh:0|relu:1").iso_hash != parse("relu:0|tanh:1").iso_hash
    # in 3 nodes: s0→1, s0→2, 2→3 equals s0→1, 1→2, s0→3 with matching labels
    assert parse("relu:0|tanh:0|sigmoid:2").iso_hash == parse("tanh:0|sigmoid:1|relu:0").iso_hash


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty genotype"),
        ("   ", "empty genotype"),
        ("gelu:0|tanh:0", "unknown op 'gelu'"),
        ("tanh:0|tanh:2", "predecessor 2 is not an earlier node"),
        ("tanh:1|tanh:0", "predecessor 1 is not an earlier node"),
        ("tanh:-1|tanh:0", "predecessor -1"),
        ("tanh|relu:0", "not of the form op:pred"),
        ("hello world", "not of the form op:pred"),
        ("Genotype(recurrent=[('tanh', 0)], concat=range(1, 5))", "concat must be range"),
        ("Genotype(recurrent=[('tanh', 0), oops], concat=range(1, 3))", "malformed recurrent list"),
    ],
)
def test_invalid_genotypes_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse(text)


def test_wrong_node_count_for_space():
    with pytest.raises(ValueError, match="has 3 nodes; space 2node needs 2"):
        space("2node").parse("tanh:0|tanh:0|tanh:0")
    with pytest.raises(ValueError, match="out of range"):
        space("2node").from_id(32)
    with pytest.raises(ValueError):
        parse(42)
    with pytest.raises(ValueError, match="predecessor must be an integer"):
        Genotype((("tanh", "0"),))
    assert OPS == ("tanh", "relu", "sigmoid", "identity")


def test_id_of_choices_is_the_id_for_one_cell_and_for_batches():
    g = parse("relu:0|sigmoid:1|identity:2")
    assert g.choices == (1, 6, 11) and id_of_choices(g.choices) == (1 * 8 + 6) * 12 + 11 == g.id == 179
    assert Genotype.of_choices((1, 6, 11)) == g
    sp = space("3node")
    batch = np.array([c.choices for c in sp])  # [384, 3]
    np.testing.assert_array_equal(id_of_choices(batch.T), np.arange(sp.size))
    assert all(Genotype.of_choices(row) == sp.from_id(i) for i, row in enumerate(batch))


ERRORS = [
    ("", "empty genotype string"),
    ("  ", "empty genotype string"),
    ("tanh", "genotype 'tanh': node 1 'tanh' is not of the form op:pred"),
    ("relu:0|tanh:x", "genotype 'relu:0|tanh:x': node 2 'tanh:x' is not of the form op:pred"),
    ("tanh:X0", "genotype 'tanh:X0': node 1 'tanh:X0' is not of the form op:pred"),
    ("tanh:0:1", "genotype 'tanh:0:1': node 1 'tanh:0:1' is not of the form op:pred"),
    ("tanh:0|relu:2", "node 2: predecessor 2 is not an earlier node (allowed 0..1)"),
    ("tanh:0|relu:1|sigmoid:3", "node 3: predecessor 3 is not an earlier node (allowed 0..2)"),
    ("gelu:0", "node 1: unknown op 'gelu' (known: tanh, relu, sigmoid, identity)"),
    ([], "genotype '[]': expected a non-empty list of (op, pred) pairs"),
    ([("tanh",)], "genotype \"[('tanh',)]\": expected (op, pred) pairs, got ('tanh',)"),
    (["x"], "genotype \"['x']\": expected (op, pred) pairs, got 'x'"),
    (3.5, "cannot parse a genotype from float 3.5"),
    ("Genotype(recurrent=[('tanh', 0), ('relu', 1)], concat=range(1, 2))",
     "genotype \"Genotype(recurrent=[('tanh', 0), ('relu', 1)], concat=range(1, 2))\": concat must be range(1, 3) "
     "(the output averages every node)"),
    ("Genotype(recurrent=[('tanh',)], concat=range(1, 2))",
     "genotype \"Genotype(recurrent=[('tanh',)], concat=range(1, 2))\": expected (op, pred) pairs, got ('tanh',)"),
]


@pytest.mark.parametrize("value, message", ERRORS)
def test_every_genotype_error_names_the_problem_exactly(value, message):
    with pytest.raises(ValueError) as err:
        parse(value)
    assert str(err.value) == message


def test_id_space_and_empty_genotype_errors_exactly():
    sp = space("2node")
    for bad in (True, "3", 32, -1):
        with pytest.raises(ValueError) as err:
            sp.from_id(bad)
        assert str(err.value) == f"id {bad!r} is out of range for space 2node (0..31)"
    assert space("1node").size == 4 and [g.canonical for g in space("1node")] == [f"{op}:0" for op in OPS]
    for name in ("0node", "x"):
        with pytest.raises(ValueError) as err:
            space(name)
        assert str(err.value) == f"unknown search space {name!r}; expected a name like '2node' or '3node'"
    with pytest.raises(ValueError, match="^genotype has no nodes$"):
        Genotype(())
    with pytest.raises(ValueError, match=r"^node 1: expected \(op, pred\), got \('tanh',\)$"):
        Genotype((("tanh",),))


def test_only_ascii_unsigned_predecessors_and_sane_space_names_are_accepted():
    """Issue 25.10: `relu:-0` and full-width digits parsed as genotypes; a 5000-digit space name answered with
    Python's int-size message."""
    import pytest

    from nasbench_ptb.space import parse, space

    for text, message in (("relu:-0|tanh:0", r"a predecessor has no sign \(write relu:0\)"),
                          ("relu:０|tanh:0", "is not of the form op:pred"),
                          ("relu:٠|tanh:0", "is not of the form op:pred")):
        with pytest.raises(ValueError, match=message):
            parse(text)
    assert parse(" relu:0 | tanh:1 ").canonical == "relu:0|tanh:1"
    with pytest.raises(ValueError, match=r"unknown search space '99999999999999999999…' \(5004 characters\)"):
        space("9" * 5000 + "node")
    with pytest.raises(ValueError, match="unknown search space '３node'"):
        space("３node")
