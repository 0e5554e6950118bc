"""``bert_scorer`` (the sequence model) on the session's real Triton: the same answers as in-process,
at the edges of its input, following the catalog without a reload, and safe against broken versions."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from safetensors.torch import load_file, save_file
from tritonclient.utils import InferenceServerException

from streamrec.model import contract
from streamrec.model.artifacts import VersionMetadata, versions, write_sequence_folder
from streamrec.model.registry import ModelRegistry, VersionRejected
from streamrec.model.sequence_request import sequence_inputs
from streamrec.model.served_sequence import load_version
from streamrec.store.catalog import CatalogRecord
from streamrec.store.catalog_store import CatalogStore
from streamrec.store.connection import connect
from tests.conftest import tiny_catalog

MODEL = contract.BERT_SCORER


@pytest.fixture(scope="module")
def triton(settings):
    with grpcclient.InferenceServerClient(settings.triton.grpc_url) as client:
        yield client


def served_folder(repo: Path, model: str = MODEL) -> Path:
    return repo / model / str(versions(repo / model)[-1])


def ask(client, histories, *, k=5, types=None, candidates=None, model=MODEL, version=""):
    result = client.infer(model, sequence_inputs(histories, k=k, types=types, candidates=candidates),
                          model_version=version, client_timeout=60)
    items = [[value.decode() for value in row] for row in result.as_numpy(contract.TOPK_ITEMS)]
    return items, result.as_numpy(contract.TOPK_SCORES), result.as_numpy(contract.CANDIDATE_SCORES)


def test_served_answers_equal_the_in_process_model(stack_settings, triton):
    ids, _, sequences = tiny_catalog()
    reference = load_version(served_folder(stack_settings.model_repo))
    histories = [
        sequences[0],
        [],  # a new user: ranked by the model's priors
        sequences[1] * 20,  # longer than max_history: the newest items count
        ["no-such-item", *sequences[2], "nor-this-one"],  # unknown ids are dropped
        [ids[-1], ids[-2], ids[-3]],  # quotes, non-ASCII, emoji ids
    ]
    types = [["click" if n % 2 else "purchase" for n in range(len(h))] for h in histories]
    types[2] = ["add_to_cart"] * len(histories[2])
    candidates = [ids[:7], ids[10:12], [], ["no-such-item", ids[3]], ids[-3:]]
    items, top, scores = ask(triton, histories, k=8, types=types, candidates=candidates)
    expected = reference.rank(histories, types=types, k=8, candidates=candidates)
    assert items == expected.top_items
    np.testing.assert_allclose(top, expected.top_scores, atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores, expected.candidate_scores, atol=1e-4, rtol=0)
    assert np.isneginf(scores[3, 0]) and np.isfinite(scores[3, 1])  # an unknown candidate is unrankable
    for history, row in zip(histories, items, strict=True):
        assert not set(history) & set(row), "the top K repeats the user's own items"
    # Without event types every item counts as a purchase, as in-process.
    items, top, _ = ask(triton, histories[:2], k=3)
    np.testing.assert_allclose(top, reference.rank(histories[:2], k=3).top_scores, atol=1e-4, rtol=0)


def test_bad_requests_get_clear_errors_and_leave_the_model_serving(triton):
    ids, _, _ = tiny_catalog()
    bad_types = sequence_inputs([ids[:3]], k=2, types=[["click"]])
    with pytest.raises(Exception, match="event types"):
        triton.infer(MODEL, bad_types, client_timeout=30)
    items, _, _ = ask(triton, [ids[:2]], k=2)
    assert all(items[0])


def test_a_just_added_catalog_item_is_recommended_without_a_reload(stack_settings, settings, triton):
    """A new item embedded like the user's history is rankable (and ranked) within seconds."""
    ids, text, _ = tiny_catalog()
    history = ids[:4]
    twin = text[3] + 0.05 * text[7]  # reads almost like the newest history item
    new_id = f"new-item-{time.time_ns()}"
    record = CatalogRecord(item_id=new_id, title="a brand-new item", category_path=("Tests",), brand=None, price=None,
                           currency=None, available=True, updated_ts=int(time.time() * 1000),
                           embedding=(twin / np.linalg.norm(twin)).astype(np.float16))

    async def store() -> None:
        client = connect(settings.redis)
        try:
            await CatalogStore(client).write([record], stored_at_ms=int(time.time() * 1000))
        finally:
            await client.aclose()

    before = ask(triton, [history], k=5, candidates=[[new_id]])
    assert np.isneginf(before[2][0, 0]), "the item was known before it was added"
    asyncio.run(store())
    deadline = time.monotonic() + 20
    while np.isneginf(ask(triton, [history], k=5, candidates=[[new_id]])[2][0, 0]):
        assert time.monotonic() < deadline, "the served model never picked up the new catalog item"
        time.sleep(0.5)
    items, _, _ = ask(triton, [history], k=10)
    assert new_id in items[0], f"a new item that reads like the user's newest item is not in their top 10: {items[0]}"


def _non_finite(folder: Path) -> None:
    path = folder / "member-0.safetensors"
    state = load_file(str(path))
    state["signal_weight"][0] = float("nan")
    save_file(state, str(path))


def _misshapen(folder: Path) -> None:
    path = folder / "member-0.safetensors"
    state = load_file(str(path))
    state["items.item_bias"] = state["items.item_bias"][:-1].contiguous()
    save_file(state, str(path))


def _items_disagree(folder: Path) -> None:
    (folder / "items.json").write_text(json.dumps(json.loads((folder / "items.json").read_text())[:-1]))


def _missing_member(folder: Path) -> None:
    (folder / "member-0.safetensors").unlink()


@pytest.fixture()
def own_model(stack_settings, settings):
    """A model of this test's own (the served config under another name, not following the
    catalog, so its answers stay put), version 1 serving."""
    name = f"bert_scorer_t{time.time_ns() % 10**8}"
    repo = stack_settings.model_repo
    source = repo / MODEL
    (repo / name).mkdir()
    config = (source / "config.pbtxt").read_text().replace(f'name: "{MODEL}"', f'name: "{name}"')
    config = config.replace('key: "catalog_refresh_s" value: { string_value: "2" }', 'key: "catalog_refresh_s" value: { string_value: "0" }')
    assert 'string_value: "0"' in config
    (repo / name / "config.pbtxt").write_text(config)
    shutil.copytree(served_folder(repo), repo / name / "1")
    registry = ModelRegistry(repo, name, settings.triton.grpc_url)
    registry.activate(1)
    try:
        yield registry
    finally:
        with grpcclient.InferenceServerClient(settings.triton.grpc_url) as client:
            client.unload_model(name)
        shutil.rmtree(repo / name, ignore_errors=True)


DAMAGES = {  # what is wrong -> (the damage, what the refusal says)
    "NaN weights": (_non_finite, "member 0 weight signal_weight has non-finite values"),
    "wrong tensor shape": (_misshapen, "size mismatch for items.item_bias"),
    "items disagree with the weights": (_items_disagree, "item ids for models of"),
    "missing file": (_missing_member, "missing member-0.safetensors"),
}
CASES = list(DAMAGES)
PUBLISHED = ["NaN weights", "wrong tensor shape", "missing file"]


def answers_as_before(triton, registry, before, ids) -> None:
    """Version 1 ready on its own and answering as it did (the model's readiness says nothing per version)."""
    assert triton.is_model_ready(registry.model, "1") and not triton.is_model_ready(registry.model, "2")
    for version in ("1", ""):  # by number, and as clients ask (the served version)
        again = ask(triton, [ids[:3]], model=registry.model, version=version)
        assert again[0] == before[0]
        np.testing.assert_allclose(again[1], before[1], atol=1e-5)


@pytest.mark.parametrize("case", PUBLISHED)
def test_a_broken_version_is_refused_at_publish_before_triton_sees_it(own_model, triton, case):
    """The trainer's path: written into staging, checked there, never renamed into the repository."""
    registry = own_model
    damage, reason = DAMAGES[case]
    ids, _, _ = tiny_catalog()
    before = ask(triton, [ids[:3]], model=registry.model)
    served = load_version(registry.model_dir / "1")
    metadata = VersionMetadata(kind="sequence", base="test", max_length=served.max_history)

    def write_broken(folder: Path) -> None:
        write_sequence_folder(folder, served, metadata)
        damage(folder)

    with pytest.raises(VersionRejected, match=re.escape(reason)):
        registry.publish_folder(write_broken)
    assert registry.versions() == [1] and not (registry.model_dir / "2").exists() and registry.retired() == []
    assert not list((registry.repo / ".staging").glob(f"{registry.model}-*"))
    assert registry.served_version() == 1
    answers_as_before(triton, registry, before, ids)
    assert registry.next_version() == 2  # nothing was used up


@pytest.mark.parametrize("case", CASES)
def test_a_broken_version_dropped_in_by_hand_is_refused_and_the_previous_keeps_serving(own_model, triton, settings, case):
    registry = own_model
    damage, reason = DAMAGES[case]
    ids, _, _ = tiny_catalog()
    before = ask(triton, [ids[:3]], model=registry.model)
    broken = registry.model_dir / "2"
    shutil.copytree(registry.model_dir / "1", broken)
    damage(broken)

    # Something else asks Triton to load the model: its config's policy picks the newest folder, the load fails.
    with pytest.raises(InferenceServerException):
        triton.load_model(registry.model)
    assert triton.is_model_ready(registry.model)
    answers_as_before(triton, registry, before, ids)

    # The trainer's start (reconcile) refuses it with the check's own reason, never asking Triton.
    said: list[str] = []
    registry.say = said.append
    assert registry.reconcile() == 1
    if case == "missing file":  # not a complete version: the registry leaves it alone, Triton never serves it
        assert broken.exists() and said == []
    else:
        assert not broken.exists() and registry.retired() == [2]
        assert any("refused before loading" in line and reason in line for line in said), said
    assert registry.served_version() == 1
    answers_as_before(triton, registry, before, ids)


def test_a_new_version_is_published_under_load_with_no_failed_request(own_model, settings):
    """Clients keep asking while version 2 is staged, loaded, probed and swapped in."""
    registry = own_model
    ids, _, _ = tiny_catalog()
    served = load_version(registry.model_dir / "1")
    with torch_no_grad():
        for member in served.ensemble.members:
            member.items.item_bias += 0.5  # a different version, still a sound one
    metadata = VersionMetadata(kind="sequence", base="test", max_length=served.max_history)
    stop, failures, answered = threading.Event(), [], [0]

    def load() -> None:
        with grpcclient.InferenceServerClient(settings.triton.grpc_url) as client:
            while not stop.is_set():
                try:
                    ask(client, [ids[:3], ids[5:9]], k=5, model=registry.model)
                    answered[0] += 1
                except Exception as error:  # noqa: BLE001 - counted, the assertion below reports it
                    failures.append(str(error))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.5)
        version = registry.publish_folder(lambda folder: write_sequence_folder(folder, served, metadata))
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert version == 2 and registry.served_version() == 2
    assert answered[0] > 10 and not failures, f"{len(failures)} failed requests, first: {failures[:1]}"


def torch_no_grad():
    import torch

    return torch.no_grad()
