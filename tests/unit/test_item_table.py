"""A conversion's images as columns (issue 24): they must read exactly like the list of items
they replace (the MindRecord output depends on the order), and cost a fraction of it."""

import random
import tracemalloc

import pytest

from irv2_core.data.item_table import Item, ItemChain, ItemTable, RelIndex

NAMES = ["cat", "dog", "émeu"]


def _table(n: int, base: str = "/data") -> tuple[ItemTable, list[Item]]:
    table, items = ItemTable(base, NAMES), []
    for i in range(n):
        label = i % len(NAMES)
        rel = f"train/{NAMES[label]}/img_{i:07d}.JPEG"
        table.append(rel, label, 1000 + i * 7)
        items.append(Item(base, rel, NAMES[label], label, 1000 + i * 7))
    return table, items


def test_a_table_reads_like_the_list_of_its_items():
    table, items = _table(50)
    assert len(table) == 50 and list(table) == items
    assert table[0] == items[0] and table[-1] == items[-1] and table[7] == items[7]
    assert table[10:20] == items[10:20] and table[::-7] == items[::-7]
    assert table[3].path == "/data/train/cat/img_0000003.JPEG"
    for bad in (50, -51):
        with pytest.raises(IndexError):
            table[bad]


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_shuffling_a_table_orders_it_as_shuffling_the_list_would(seed):
    """The train split's order decides the MindRecord bytes: it must not change with the holder."""
    table, items = _table(1000)
    table.shuffle(random.Random(seed))
    random.Random(seed).shuffle(items)
    assert list(table) == items


def test_a_chain_indexes_across_its_parts():
    first, a = _table(5)
    second, b = _table(3, base="/other")
    empty = ItemTable("/x", NAMES)
    chain = ItemChain([first, empty, second])
    assert len(chain) == 8 and list(chain) == a + b
    assert [chain[i] for i in range(-8, 8)] == (a + b) * 2
    assert chain[4:6] == [a[4], b[0]]
    with pytest.raises(IndexError):
        chain[8]


def test_a_path_is_claimed_once_and_only_its_own_item():
    table, items = _table(200)
    index = RelIndex(table)
    assert index.claim("train/cat/nope.JPEG") is None
    for item in reversed(items):
        assert index.claim(item.rel) == item
    assert index.claim(items[0].rel) is None  # claimed already (a manifest listing it twice)
    assert index.all_claimed()
    partly = RelIndex(table)
    partly.claim(items[5].rel)
    assert not partly.all_claimed()


def _peak_per_image(n: int) -> int:
    tracemalloc.start()
    try:
        table = ItemTable("/data", NAMES)
        for i in range(n):
            table.append(f"train/n{i % 1000:08d}/n{i % 1000:08d}_{i}.JPEG", i % 3, 110_000 + i)
        index = RelIndex(table)  # what checking the stage manifest adds
        assert index.claim(table[n // 2].rel) is not None
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_holding_and_indexing_the_items_costs_little_per_image():
    """Issue 24: conversion at 110k images peaked 75 MB above MindSpore's import, ~290 B per
    image in objects (an Item, its path string, a dict entry per image for the manifest check).
    Columns hold an ImageNet-style path in ~35 B plus ~20 B of label, size and offset; the index
    adds 25 B."""
    small, big = _peak_per_image(20_000), _peak_per_image(80_000)
    per_image = (big - small) / 60_000
    assert per_image < 120, f"{per_image:.0f} B per image (peaks {small} and {big} B)"
