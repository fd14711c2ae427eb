"""The integer codes that travel into the kernels (C++, CUDA, Triton), one
IntEnum each, mirrored by csrc/common/modes.h (tests/test_modes.py checks that
the two agree). A member's lower-case name is the string the Python API takes."""
import enum
from typing import Dict


class Activation(enum.IntEnum):
    IDENTITY = 0
    RELU = 1
    SILU = 2
    HARDSWISH = 3


class Gate(enum.IntEnum):
    SIGMOID = 0
    HARD_SIGMOID = 1


class Pool(enum.IntEnum):
    """A squeeze's channel pool: the mean, or 0.5 * mean + 0.5 * max."""
    AVG = 0
    AVG_MAX = 1


class BatchNormMode(enum.IntEnum):
    """How a gate network's BatchNorm normalises: not at all, with the batch's
    statistics, or with the running ones."""
    NONE = 0
    BATCH = 1
    RUNNING = 2


def codes(modes: type) -> Dict[str, int]:
    """{"relu": 1, ...}: the API's names of an enum's members and their codes."""
    return {m.name.lower(): int(m) for m in modes}


def name_of(modes: type, code: int) -> str:
    """The API's name of a code: name_of(Activation, 1) == "relu"."""
    return modes(code).name.lower()
