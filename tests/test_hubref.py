"""`namespace/name[@revision]` has one parser (_util.hubref.HubRef); these are the rules every
caller (sources, training data, the Space builder, re-running a written recipe) relies on."""
from __future__ import annotations

from viscodex._util.hubref import HubRef
from viscodex.engine.sources import display_name


def test_parse_splits_on_the_last_at():
    assert HubRef.parse("org/name@v1.0") == HubRef("org/name", "v1.0")
    assert HubRef.parse("org/name@refs/pr/3") == HubRef("org/name", "refs/pr/3")
    assert HubRef.parse("org/name") == HubRef("org/name", None)
    assert HubRef.parse("org/name@") == HubRef("org/name", None)  # an empty revision is none
    assert str(HubRef.parse("org/name@abc")) == "org/name@abc" and str(HubRef("org/name")) == "org/name"


def test_an_existing_path_is_never_split(tmp_path):
    d = tmp_path / "ckpt@step100"
    d.mkdir()
    assert HubRef.parse(str(d)) == HubRef(str(d), None)
    assert not HubRef.parse(str(d)).is_hub_id
    assert display_name(str(d)) == "ckpt@step100"  # a folder's name, not an absolute path


def test_is_hub_id():
    assert HubRef.parse("Qwen/Qwen2.5-VL-7B-Instruct@main").is_hub_id
    assert not HubRef.parse("./local/folder").is_hub_id
    assert not HubRef.parse("/abs/org/name").is_hub_id
    assert not HubRef.parse("no-namespace").is_hub_id


def test_pinned_adds_a_revision_only_where_none_is_named(tmp_path):
    """Re-running a written recipe pins the revisions it resolved, unless the spec names one."""
    assert str(HubRef.parse("org/name").pinned("abc123")) == "org/name@abc123"
    assert str(HubRef.parse("org/name@v2").pinned("abc123")) == "org/name@v2"
    assert str(HubRef.parse("org/name").pinned(None)) == "org/name"
    assert str(HubRef.parse(str(tmp_path)).pinned("abc123")) == str(tmp_path)  # local folders have no revisions
    assert display_name("org/name@v2") == "org/name@v2"
