"""The mode codes the kernels take: attnkernels/_core/modes.py and
csrc/common/modes.h name the same members with the same values, and every
family's config layout (``op.Config``) is its composite's in csrc/composite/."""
import os
import re

import pytest

from attnkernels._core import modes
from attnkernels.families import FAMILIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# C++ prefixes that keep unscoped enumerators apart (kBnNone is BatchNormMode.NONE)
PREFIXES = {"BatchNormMode": "bn"}


def cpp_enums(path):
    """{enum name: {enumerator: value}} of the named enums in a C++ file of the tree."""
    return parse_enums(open(os.path.join(ROOT, path)).read())


def parse_enums(text):
    """The named enums of C++ source text (values counted on from the last
    explicit one, as C++ does; comments dropped)."""
    text = re.sub(r"//[^\n]*", "", text)
    enums = {}
    for name, body in re.findall(r"enum\s+(\w+)\s*(?::\s*\w+)?\s*\{([^}]*)\}", text):
        values, value = {}, -1
        for item in filter(None, (i.strip() for i in body.split(","))):
            key, _, explicit = (p.strip() for p in item.partition("="))
            value = int(explicit) if explicit else value + 1
            values[key] = value
        enums[name] = values
    return enums


def cpp_name(member: str, prefix: str = "") -> str:
    """The C++ spelling's key: kHardSigmoid, HARD_SIGMOID -> "hardsigmoid"."""
    return member.lower().replace("_", "")[len(prefix):] if prefix else \
        member.lower().replace("_", "")


def as_keys(values, prefix=""):
    return {cpp_name(k[1:], prefix): v for k, v in values.items()}


@pytest.mark.parametrize("enum_name", ["Activation", "Gate", "Pool", "BatchNormMode"])
def test_python_modes_are_the_header_s(enum_name):
    cpp = cpp_enums("csrc/common/modes.h")[enum_name]
    python = getattr(modes, enum_name)
    want = {cpp_name(m.name): int(m) for m in python}
    assert as_keys(cpp, PREFIXES.get(enum_name, "")) == want


def test_the_parser_reads_implicit_values_and_comments():
    text = "enum A : int { kOne = 1, kTwo,  // c\n kFive = 5 };\nenum B { kX };\n"
    assert parse_enums(text) == {"A": {"kOne": 1, "kTwo": 2, "kFive": 5}, "B": {"kX": 0}}


@pytest.mark.parametrize("family", [f for f in FAMILIES if hasattr(f.op, "Config")],
                         ids=lambda f: f.name)
def test_config_layout_is_the_composite_s(family):
    cpp = cpp_enums(f"csrc/composite/{family.name}.cpp")["Config"]
    size = cpp.pop("kConfigSize", len(family.op.Config))  # the count, where C++ checks it
    want = {cpp_name(m.name): int(m) for m in family.op.Config}
    assert as_keys(cpp) == want and size == len(want)
