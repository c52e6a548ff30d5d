"""``foreach`` templates expanded in the raw plan (pure: the file list is given)."""

from __future__ import annotations

from agentfleet.foreach import (
    DEFAULT_MAX_ITEMS,
    escape_glob,
    expand,
    file_values,
    needs_files,
    sanitize_id_part,
)
from agentfleet.patterns import matches

FILES = [
    "README.md",
    "setup.py",
    "src/app/__init__.py",
    "src/app/Orders_API.py",
    "src/app/util.py",
    "src/lib/util.py",
    "src/lib/[draft].py",
    "docs/index.md",
]


def plan(*tasks: dict) -> dict:
    return {"name": "p", "tasks": list(tasks)}


def test_files_template_substitutes_every_placeholder_and_defaults_paths():
    raw = plan({
        "id": "types-{dir}-{stem}",
        "prompt": "Add type hints to {path} ({name}, stem {stem}, in {dir}).",
        "verify": "python -m py_compile {path}",
        "foreach": {"files": "src/app/*.py"},
    })
    out = expand(raw, FILES)
    assert out.problems == []
    tasks = out.raw["tasks"]
    assert [t["id"] for t in tasks] == [
        "types-src-app-init", "types-src-app-orders-api", "types-src-app-util"]
    assert tasks[1] == {
        "id": "types-src-app-orders-api",
        "prompt": "Add type hints to src/app/Orders_API.py (Orders_API.py, stem Orders_API, "
                  "in src/app).",
        "verify": "python -m py_compile src/app/Orders_API.py",
        "paths": ["src/app/Orders_API.py"],
    }
    assert "foreach" not in tasks[0]
    (template,) = out.templates
    assert template.id == "types-{dir}-{stem}" and len(template.ids) == 3
    assert template.describe() == (
        "types-{dir}-{stem}: foreach files 'src/app/*.py' -> 3 tasks: types-src-app-init, "
        "types-src-app-orders-api, types-src-app-util")
    assert raw["tasks"][0]["foreach"] == {"files": "src/app/*.py"}  # the input is untouched


def test_paths_escape_glob_characters_and_verify_is_shell_quoted():
    out = expand(plan({
        "id": "fix-{stem}", "prompt": "fix {path}", "verify": "cat {path}",
        "foreach": {"files": "src/lib/*.py"},
    }), FILES)
    assert out.problems == []
    draft = next(t for t in out.raw["tasks"] if t["id"] == "fix-draft")
    assert draft["paths"] == ["src/lib/\\[draft\\].py"]
    assert matches(draft["paths"][0], "src/lib/[draft].py")
    assert not matches(draft["paths"][0], "src/lib/d.py")
    assert draft["verify"] == "cat 'src/lib/[draft].py'"
    assert draft["prompt"] == "fix src/lib/[draft].py"


def test_values_template_and_other_braces_left_alone():
    out = expand(plan({
        "id": "docs-{value}", "prompt": "Document `{value}`; keep {braces} and {path_like}.",
        "paths": ["docs/{value}.md"], "foreach": {"values": ["plan", "run", 3]},
    }), None)
    assert out.problems == []
    assert [(t["id"], t["paths"]) for t in out.raw["tasks"]] == [
        ("docs-plan", ["docs/plan.md"]), ("docs-run", ["docs/run.md"]), ("docs-3", ["docs/3.md"])]
    assert out.raw["tasks"][0]["prompt"] == "Document `plan`; keep {braces} and {path_like}."


def test_depends_on_a_template_means_all_its_expansions():
    out = expand(plan(
        {"id": "base", "prompt": "x", "paths": ["lib.py"]},
        {"id": "fix-{stem}", "prompt": "fix {path}", "depends_on": ["base"],
         "foreach": {"files": "src/app/*.py"}},
        {"id": "docs", "prompt": "doc", "depends_on": ["fix-{stem}", "base"],
         "paths": ["docs/"]},
    ), FILES)
    assert out.problems == []
    tasks = {t["id"]: t for t in out.raw["tasks"]}
    assert tasks["docs"]["depends_on"] == ["fix-init", "fix-orders-api", "fix-util", "base"]
    assert tasks["fix-util"]["depends_on"] == ["base"]


def test_a_colliding_template_id_names_the_colliding_files():
    out = expand(plan({"id": "types-{stem}", "prompt": "p {path}",
                       "foreach": {"files": "src/**/util.py"}}), FILES)
    assert out.problems == [(
        "tasks[types-{stem}].id",
        "'types-{stem}' gives 'types-util' for more than one item (files src/app/util.py, "
        "src/lib/util.py); use {path} or {dir} in the id to tell them apart",
    )]
    assert out.raw["tasks"] == []  # left out: the later checks do not repeat it


def test_an_id_without_placeholder_and_an_expansion_clashing_with_a_task():
    same = expand(plan({"id": "fix", "prompt": "p", "foreach": {"values": ["a", "b"]}}), None)
    assert same.problems == [("tasks[fix].id", "'fix' is the same for every item: put a "
                              "placeholder in it ({value})")]
    clash = expand(plan({"id": "fix-a", "prompt": "p"},
                        {"id": "fix-{value}", "prompt": "p", "foreach": {"values": ["a", "b"]}}),
                   None)
    assert clash.problems == [("tasks[fix-{value}].id", "expands to 'fix-a', the id of another "
                               "task; ids must be unique")]


def test_max_items_refuses_a_larger_expansion():
    values = [f"v{i}" for i in range(DEFAULT_MAX_ITEMS + 1)]
    out = expand(plan({"id": "t-{value}", "prompt": "p", "foreach": {"values": values}}), None)
    assert out.problems == [("tasks[t-{value}].foreach", f"values has {DEFAULT_MAX_ITEMS + 1} "
                             f"items, more than max_items ({DEFAULT_MAX_ITEMS}): narrow it, or "
                             "raise foreach.max_items if you mean it")]
    small = expand(plan({"id": "t-{stem}", "prompt": "p",
                         "foreach": {"files": "src/**", "max_items": 3}}), FILES)
    assert small.problems == [("tasks[t-{stem}].foreach", "files 'src/**' matches 5 items, more "
                               "than max_items (3): narrow it, or raise foreach.max_items if "
                               "you mean it")]
    ok = expand(plan({"id": "t-{value}", "prompt": "p",
                      "foreach": {"values": values, "max_items": 500}}), None)
    assert ok.problems == [] and len(ok.raw["tasks"]) == DEFAULT_MAX_ITEMS + 1
    bad = expand(plan({"id": "t-{value}", "prompt": "p",
                       "foreach": {"values": ["a"], "max_items": 2.5}}), None)
    assert bad.problems == [("tasks[t-{value}].foreach.max_items",
                             "expected a whole number of at least 1, got 2.5")]


def test_bad_foreach_specs_each_say_what_to_write():
    cases = {
        "both": {"files": "*.py", "values": [1]},
        "neither": {"max_items": 3},
        "typo": {"file": "*.py"},
        "nothing": {"files": "*.rs"},
        "bad-glob": {"files": "/abs/*.py"},
        "empty": {"values": []},
    }
    out = expand(plan(*[{"id": f"{k}-{{stem}}", "prompt": "p", "foreach": v}
                        for k, v in cases.items()]), FILES)
    got: dict[str, str] = {}
    for where, message in out.problems:
        got.setdefault(where, message)
    assert got["tasks[both-{stem}].foreach"].startswith("give exactly one of files:")
    assert got["tasks[neither-{stem}].foreach"].startswith("give exactly one of files:")
    assert ("tasks[typo-{stem}].foreach", "unknown key 'file' (valid keys: files, values, "
            "max_items)") in out.problems
    assert got["tasks[nothing-{stem}].foreach.files"] == "'*.rs' matches no file of the base commit"
    assert "is absolute" in got["tasks[bad-glob-{stem}].foreach.files"]
    assert got["tasks[empty-{stem}].foreach.values"] == "expected a non-empty list of values"


def test_a_placeholder_of_the_other_kind_is_a_problem():
    out = expand(plan({"id": "t-{value}", "prompt": "fix {path}",
                       "foreach": {"values": ["a", "b"]}}), None)
    assert out.problems == [("tasks[t-{value}].prompt", "{path} belongs to the other kind of "
                             "foreach; foreach values gives {value}")]


def test_an_id_that_sanitises_to_nothing_valid_is_refused():
    out = expand(plan({"id": "{value}", "prompt": "p", "foreach": {"values": ["ok", "__"]}}),
                 None)
    assert out.problems == [("tasks[{value}].id", "'{value}' gives '' for __, which is not a "
                             "valid id: use lowercase letters, digits and '-', starting with a "
                             "letter or digit")]


def test_an_empty_value_leaves_no_double_dash_in_the_id():
    out = expand(plan({"id": "t-{dir}-{stem}", "prompt": "p", "foreach": {"files": "*.py"}}),
                 ["setup.py", "src/app/util.py"])
    assert [t["id"] for t in out.raw["tasks"]] == ["t-setup", "t-src-app-util"]


def test_helpers():
    assert sanitize_id_part("src/Foo_bar.py") == "src-foo-bar-py"
    assert sanitize_id_part("__init__") == "init"
    assert file_values("setup.py") == {"path": "setup.py", "name": "setup.py", "stem": "setup",
                                       "dir": "."}
    assert escape_glob("a*b?[c]\\d") == "a\\*b\\?\\[c\\]\\\\d"
    assert needs_files(plan({"id": "x", "prompt": "p", "foreach": {"files": "*"}}))
    assert not needs_files(plan({"id": "x", "prompt": "p", "foreach": {"values": [1]}}))
    assert expand(plan({"id": "x", "prompt": "p"}), None).raw["tasks"] == [
        {"id": "x", "prompt": "p"}]
