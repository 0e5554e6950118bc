"""The recs worker's client for ``bert_scorer`` against the session's real Triton."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.engine.scorer_client import ScorerUnavailable
from serving.engine.sequence_client import TritonSequenceClient
from streamrec.model import contract
from streamrec.model.artifacts import versions
from streamrec.model.served_sequence import load_version
from streamrec.store.catalog_store import CatalogStore
from streamrec.store.connection import connect
from tests.conftest import tiny_catalog


def following_the_catalog(folder, settings):
    """The version in-process, with the items the served one has taken from the session's
    catalog since it loaded (other tests add some): the same model Triton answers with."""
    reference = load_version(folder)
    dim = reference.ensemble.members[0].items.text.shape[1]

    async def stored():
        client = connect(settings.redis)
        try:
            catalog = CatalogStore(client)
            return list((await catalog.read([item for item, _ in await catalog.changes_since(0)])).values())
        finally:
            await client.aclose()

    records = asyncio.run(stored())
    fresh = {r.item_id: vector for r in records if r.item_id not in reference.position and (vector := r.text_vector(dim)) is not None}
    if fresh:
        reference.add_items(list(fresh), np.stack(list(fresh.values())))
    reference.set_available({r.item_id: r.available for r in records})
    return reference


def test_concurrent_users_are_coalesced_and_answered_like_in_process(stack_settings, settings):
    ids, _, sequences = tiny_catalog()
    folder = stack_settings.model_repo / contract.BERT_SCORER / str(versions(stack_settings.model_repo / contract.BERT_SCORER)[-1])
    reference = following_the_catalog(folder, settings)
    users = [(sequences[n], ["click"] * len(sequences[n]), ids[n : n + 6]) for n in range(24)]

    async def run():
        client = TritonSequenceClient.from_settings(settings, max_delay_s=0.02)
        try:
            answers = await asyncio.gather(*(client.rank(h, t, 7, c) for h, t, c in users))
            return answers, client.requests, client.served_version
        finally:
            await client.close()

    answers, requests, version = asyncio.run(run())
    assert requests < len(users) / 4, f"{requests} requests for {len(users)} users: not coalesced"
    assert version == folder.name
    for (history, types, candidates), answer in zip(users, answers, strict=True):
        expected = reference.rank([history], types=[types], k=7, candidates=[candidates])
        assert answer.top_items == [item for item in expected.top_items[0] if item]
        np.testing.assert_allclose(answer.candidate_scores, expected.candidate_scores[0], atol=1e-4)


def test_an_unreachable_triton_opens_the_circuit():
    async def run():
        client = TritonSequenceClient("127.0.0.1:9", timeout_s=0.5, breaker_failures=2, breaker_reset_s=60)
        try:
            for _ in range(2):
                with pytest.raises(ScorerUnavailable):
                    await client.rank(["a"], ["click"], 3, [])
            with pytest.raises(ScorerUnavailable, match="circuit open"):
                await client.rank(["a"], ["click"], 3, [])
        finally:
            await client.close()

    asyncio.run(run())


def test_a_pinned_version_is_the_one_that_answers_and_an_unloaded_one_fails(stack_settings, settings):
    """An experiment's variant may pin a model version: a copy of bert_scorer with two versions
    loaded side by side (``latest: 2``) answers each call with the version it asked for."""
    import shutil

    import tritonclient.http as httpclient

    repo = stack_settings.model_repo
    source = repo / contract.BERT_SCORER
    name = "bert_scorer_pinned"
    target = repo / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    config = (source / "config.pbtxt").read_text().replace(f'name: "{contract.BERT_SCORER}"', f'name: "{name}"')
    (target / "config.pbtxt").write_text(config.replace("num_versions: 1", "num_versions: 2"))
    newest = source / str(versions(source)[-1])
    for version in ("1", "2"):
        shutil.copytree(newest, target / version, ignore=shutil.ignore_patterns("__pycache__"))
    admin = httpclient.InferenceServerClient(settings.triton.http_url, network_timeout=300)
    admin.load_model(name)
    try:
        ids, _, sequences = tiny_catalog()

        async def run():
            client = TritonSequenceClient.from_settings(settings, model=name, max_delay_s=0.02, breaker_failures=100)
            try:
                calls = [client.rank(sequences[n], ["click"] * len(sequences[n]), 5, ids[:4], version=version)
                         for n in range(6) for version in ("1", "2", None)]
                answers = await asyncio.gather(*calls)
                with pytest.raises(ScorerUnavailable):
                    await client.rank(sequences[0], ["click"] * len(sequences[0]), 5, ids[:4], version="3")
                return answers, client.served_version
            finally:
                await client.close()

        answers, served = asyncio.run(run())
        assert [answer.version for answer in answers] == ["1", "2", "2"] * 6
        assert served == "2"  # unpinned calls label lists with the version the policy serves
        for one, two in zip(answers[0::3], answers[1::3], strict=True):  # the same weights in both versions
            assert one.top_items == two.top_items
    finally:
        admin.unload_model(name)
        shutil.rmtree(target, ignore_errors=True)
