"""Which version of a model Triton serves: publish, load, verify, roll back and prune versions.

Used by the trainer (publish a challenger) and by ``streamrec model list`` / ``model rollback``.

One rule keeps Triton, the folders and a restarted server in agreement: **the served version is
the newest complete version folder in ``<repo>/<model>/``** (the configs' ``latest: 1`` policy
picks exactly that on a restart). So

* a new version is written and checked in ``<repo>/.staging/`` (it loads, scores a probe batch,
  the scores are finite and shaped right) and only then renamed, whole, into ``<model>/<N>``: a
  folder caught half-written would wedge Triton for good, so none is ever renamed in;
* it is loaded through Triton's repository API with a config whose version policy names it alone
  (``specific: [N]``) and whose ``model_warmup`` makes Triton score a probe batch before it
  reports the version ready; Triton keeps serving the old version until the new one is ready,
  then unloads the old one, so clients see no gap (tried under load: no failed request);
* the trainer then checks the version's own readiness (``is_model_ready(name, N)``; a failed load
  elsewhere turns server-wide readiness false, so that says nothing) and scores a probe batch
  against version N by number;
* a version that fails any of this is moved out of ``<model>/`` into ``<model>/.retired/`` and
  the previous version is loaded again, so the rule holds again;
* a version the registry did not stage itself (a folder dropped into ``<model>/`` by hand, found by
  :meth:`reconcile`) gets the same in-process check before Triton is asked to load it: wrong
  tensor shapes, non-finite weights or a missing file are refused with the check's own reason
  (Triton's refusal carries only the first line of the backend's error) and Triton is never
  asked. Triton alone still refuses such a folder when something else loads it (an operator's
  ``load`` of the model, whose config picks the newest folder): the load fails and the old
  version keeps serving, which only the version's own readiness shows;
* a rollback to N loads N the same way and retires the newer versions (version numbers are
  never reused, retired ones included).

The load config is the one Triton has loaded (so a GPU variant chosen with
``--model-config-name`` is kept), or ``config.pbtxt`` when the model is not loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from streamrec.model import contract
from streamrec.model.artifacts import (
    VersionMetadata,
    load_folder,
    read_metadata,
    versions,
    write_folder,
)
from streamrec.model.inference import InProcessScorer
from streamrec.model.sequence_request import sequence_inputs

Say = Callable[[str], None]
STAGING = ".staging"
RETIRED = ".retired"
PROBE_CONTEXTS = [
    "Nitrile gloves, 100 pack ; Pipette tips 200 uL",
    "",
    "3D printer filament PLA 1.75 mm",
    "ピペット 10 mL ; Нитриловые перчатки",
]
PROBE_ITEMS = [
    "Gorilla Glue, Waterproof. Industrial & Scientific > Tapes. Gorilla",
    "Digital caliper 150 mm. Industrial & Scientific > Measuring",
    "",
    "very long item text " * 100,
]


class VersionRejected(RuntimeError):
    """A version failed validation or Triton's load, readiness or probe; the previous one serves."""


def _one_line(error: BaseException, limit: int = 500) -> str:
    """``error``'s message on one line (torch's and Triton's span several, the reason in a later one)."""
    return " ".join(str(error).split())[:limit]


@dataclass
class VersionInfo:
    version: int
    state: str  # "serving" | "available" | "retired"
    metadata: VersionMetadata | None
    folder: Path

    def as_dict(self) -> dict:
        meta = self.metadata
        return {
            "version": self.version,
            "state": self.state,
            "created_at": meta.created_at if meta else None,
            "base": meta.base if meta else None,
            "metrics": meta.metrics if meta else {},
            "lineage": meta.lineage if meta else {},
        }


def probe_scores(scores: np.ndarray, expected: int) -> None:
    """Raise unless ``scores`` are ``expected`` finite values (one per probe pair)."""
    array = np.asarray(scores)
    if array.size != expected or array.reshape(-1).shape != (expected,):
        raise VersionRejected(f"probe batch of {expected} pairs gave scores of shape {array.shape}")
    if not np.isfinite(array).all():
        raise VersionRejected(f"probe scores are not finite: {array.reshape(-1).tolist()}")


def _folder_kind(folder: Path) -> str:
    try:
        return read_metadata(folder).kind
    except (OSError, ValueError, TypeError) as error:
        raise VersionRejected(f"{folder.name}: unreadable metadata: {_one_line(error)}") from error


def sequence_probe(item_ids: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Probe histories for a sequence version (known items, an unknown one, an empty one) and candidates."""
    known = item_ids[:3]
    histories = [known, [], [*known[:1], "no-such-item-\u2603"], known[:1] * 80]
    return histories, [item_ids[:5], [], ["no-such-item"], item_ids[-2:]]


def probe_ranked(top_scores: np.ndarray, expected_rows: int) -> None:
    """Raise unless the probe's top-K scores have a row per history, all finite or padding."""
    array = np.asarray(top_scores)
    if array.ndim != 2 or array.shape[0] != expected_rows:
        raise VersionRejected(f"probe of {expected_rows} histories gave top-K scores of shape {array.shape}")
    if np.isnan(array).any() or np.isposinf(array).any() or not np.isfinite(array[:, 0]).all():
        raise VersionRejected(f"probe top-K scores are not finite: {array[:, :3].tolist()}")


def validate_sequence_folder(folder: Path) -> None:
    from streamrec.model.served_sequence import load_version

    try:
        served = load_version(folder)
    except Exception as error:  # any load failure means the version is not publishable
        raise VersionRejected(f"{folder.name}: cannot be loaded: {_one_line(error)}") from error
    histories, candidates = sequence_probe(served.item_ids)
    ranked = served.rank(histories, k=5, candidates=candidates)
    probe_ranked(ranked.top_scores, len(histories))


def validate_folder(folder: Path) -> None:
    """In-process check of a scorer version: loads, scores a probe batch, finite and shaped right."""
    if _folder_kind(folder) == "sequence":
        validate_sequence_folder(folder)
        return
    try:
        module, tokenizer, metadata = load_folder(folder)
    except Exception as error:  # any load failure means the version is not publishable
        raise VersionRejected(f"{folder.name}: cannot be loaded: {_one_line(error)}") from error
    if metadata.kind != "scorer":
        raise VersionRejected(f"{folder.name}: holds a {metadata.kind}, not a scorer")
    scorer = InProcessScorer(module, tokenizer, max_length=metadata.max_length, precision="fp32")
    probe_scores(scorer.score_pairs(PROBE_CONTEXTS, PROBE_ITEMS), len(PROBE_ITEMS))


@dataclass
class ModelRegistry:
    """The versions of one scorer model in a Triton model repository, and which one Triton serves."""

    repo: Path
    model: str
    triton_grpc_url: str
    load_timeout_s: float = 300.0
    say: Say = field(default=lambda message: None)

    @property
    def model_dir(self) -> Path:
        return self.repo / self.model

    @property
    def retired_dir(self) -> Path:
        return self.model_dir / RETIRED

    def _client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.triton_grpc_url)

    # ------------------------------------------------------------------ reading

    def versions(self) -> list[int]:
        """Complete versions in the model folder (what Triton may serve)."""
        return versions(self.model_dir)

    def retired(self) -> list[int]:
        return versions(self.retired_dir)

    def next_version(self) -> int:
        """One above every number ever used here (complete, partial or retired): numbers are never reused."""
        used = [int(p.name) for d in (self.model_dir, self.retired_dir) if d.exists() for p in d.iterdir() if p.name.isdigit()]
        return max(used, default=0) + 1

    def newest(self) -> int | None:
        found = self.versions()
        return found[-1] if found else None

    def served_version(self) -> int | None:
        """The version Triton has READY for this model (the highest, if several), None if none."""
        with self._client() as client:
            index = client.get_model_repository_index(as_json=True).get("models", [])
        ready = [int(m["version"]) for m in index if m.get("name") == self.model and m.get("state") == "READY" and m.get("version")]
        return max(ready) if ready else None

    def metadata(self, version: int) -> VersionMetadata:
        return read_metadata(self.model_dir / str(version))

    def list(self) -> list[VersionInfo]:
        served = self.served_version()
        infos = []
        for directory, versions_here, state in (
            (self.model_dir, self.versions(), "available"),
            (self.retired_dir, self.retired(), "retired"),
        ):
            for version in versions_here:
                folder = directory / str(version)
                try:
                    metadata = read_metadata(folder)
                except (OSError, ValueError, TypeError):
                    metadata = None
                infos.append(VersionInfo(version, "serving" if state == "available" and version == served else state, metadata, folder))
        return sorted(infos, key=lambda info: info.version)

    # ------------------------------------------------------------------ writing

    def clean_staging(self) -> list[Path]:
        """Remove this model's staging leftovers (a publish killed half-way); returns what was removed."""
        staging = self.repo / STAGING
        removed = [p for p in staging.glob(f"{self.model}-*")] if staging.exists() else []
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return removed

    def stage(self, write: Callable[[Path], None], version: int) -> Path:
        """Write a version with ``write(folder)`` into staging, validate it, rename it into place.

        Nothing reaches ``<model>/<version>`` unless it was complete and scored the probe batch.
        """
        target = self.model_dir / str(version)
        if target.exists():
            raise FileExistsError(f"{target} already exists")
        staging = self.repo / STAGING / f"{self.model}-{version}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir(parents=True)
            write(staging)
            validate_folder(staging)
            os.rename(staging, target)  # atomic within one filesystem
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def stage_module(self, module, tokenizer, metadata: VersionMetadata, version: int) -> Path:
        return self.stage(lambda folder: write_folder(folder, module, tokenizer, metadata), version)

    def _load_config(self, client: grpcclient.InferenceServerClient, version: int) -> str:
        config = model_config_pb2.ModelConfig()
        try:
            loaded = client.get_model_config(self.model, as_json=True)["config"]
            json_format.ParseDict(loaded, config, ignore_unknown_fields=True)
        except InferenceServerException:
            text_format.Parse((self.model_dir / "config.pbtxt").read_text(), config)
        config.version_policy.Clear()
        config.version_policy.specific.versions.append(version)
        del config.model_warmup[:]
        warmup = config.model_warmup.add()
        warmup.name = "probe"
        warmup.batch_size = max(1, min(8, config.max_batch_size or 1))
        names = (contract.SCORER_INPUT_CONTEXT, contract.SCORER_INPUT_ITEM)
        if self._kind(version) == "sequence":
            names = (contract.HISTORY,)  # empty ids: unknown items, a valid request
        for name in names:
            tensor = warmup.inputs[name]
            tensor.data_type = model_config_pb2.TYPE_STRING
            tensor.dims.append(3 if name == contract.HISTORY else 1)
            tensor.zero_data = True
        return json_format.MessageToJson(config)

    def _kind(self, version: int) -> str:
        for directory in (self.model_dir, self.retired_dir):
            if (directory / str(version) / "metadata.json").exists():
                return _folder_kind(directory / str(version))
        return "scorer"

    def _probe_sequence(self, client: grpcclient.InferenceServerClient, version: int) -> None:
        folder = self.model_dir / str(version)
        item_ids = json.loads((folder / "items.json").read_text(encoding="utf-8"))
        histories, candidates = sequence_probe(item_ids)
        result = client.infer(self.model, sequence_inputs(histories, k=5, candidates=candidates),
                              model_version=str(version), client_timeout=60)
        probe_ranked(result.as_numpy(contract.TOPK_SCORES), len(histories))

    def _probe_triton(self, client: grpcclient.InferenceServerClient, version: int) -> None:
        if self._kind(version) == "sequence":
            self._probe_sequence(client, version)
            return
        inputs = []
        for name, texts in ((contract.SCORER_INPUT_CONTEXT, PROBE_CONTEXTS), (contract.SCORER_INPUT_ITEM, PROBE_ITEMS)):
            payload = np.array([[text.encode()] for text in texts], dtype=np.object_)
            tensor = grpcclient.InferInput(name, list(payload.shape), "BYTES")
            tensor.set_data_from_numpy(payload)
            inputs.append(tensor)
        result = client.infer(self.model, inputs, model_version=str(version), client_timeout=60)
        probe_scores(result.as_numpy(contract.SCORER_OUTPUT), len(PROBE_ITEMS))

    def _load(self, client: grpcclient.InferenceServerClient, version: int) -> None:
        """Load ``version`` alone (Triton swaps it in when ready), then check its readiness and a probe."""
        client.load_model(self.model, config=self._load_config(client, version), client_timeout=self.load_timeout_s)
        deadline = time.monotonic() + 30
        while not client.is_model_ready(self.model, str(version)):
            if time.monotonic() > deadline:
                raise VersionRejected(f"{self.model} {version} loaded but never reported ready")
            time.sleep(0.2)
        self._probe_triton(client, version)

    def activate(self, version: int, *, previous: int | None = None, validated: bool = False) -> None:
        """Make ``version`` the served one; on any failure put ``previous`` back and retire ``version``.

        Unless ``validated`` (it was just staged), the folder is checked in-process first; a folder
        that fails is retired without Triton being asked, so ``previous`` is never touched.
        """
        started = time.monotonic()
        if not validated:
            try:
                validate_folder(self.model_dir / str(version))
            except VersionRejected as error:
                self.say(f"{self.model} {version} refused before loading: {error}")
                self.retire(version)
                raise VersionRejected(f"{self.model} {version}: {error}") from error
        with self._client() as client:
            try:
                self._load(client, version)
            except (InferenceServerException, VersionRejected) as error:
                self.say(f"{self.model} {version} refused by Triton: {_one_line(error)}")
                self.retire(version)
                if previous is not None and previous != version:
                    try:
                        if not client.is_model_ready(self.model, str(previous)):
                            self._load(client, previous)
                    except (InferenceServerException, VersionRejected):
                        self._load(client, previous)
                raise VersionRejected(f"{self.model} {version}: {_one_line(error)}") from error
        self.say(f"{self.model} {version} serving (loaded, warmed up and probed in {time.monotonic() - started:.1f} s)")

    def publish(self, module, tokenizer, metadata: VersionMetadata) -> int:
        """Stage, validate and rename a new version in, then serve it; returns its number."""
        return self.publish_folder(lambda folder: write_folder(folder, module, tokenizer, metadata))

    def publish_folder(self, write: Callable[[Path], None]) -> int:
        """As :meth:`publish` for a version that ``write(folder)`` writes (e.g. a sequence version)."""
        previous = self.served_version()
        version = self.next_version()
        self.stage(write, version)
        self.activate(version, previous=previous, validated=True)
        return version

    def retire(self, version: int) -> None:
        """Move a version out of the model folder (Triton and a restart no longer see it)."""
        source = self.model_dir / str(version)
        if source.exists():
            self.retired_dir.mkdir(parents=True, exist_ok=True)
            os.rename(source, self.retired_dir / str(version))

    def reconcile(self) -> int | None:
        """Serve the newest complete version if Triton serves another (e.g. after a crash between
        rename and load); returns the served version."""
        newest, served = self.newest(), self.served_version()
        if newest is not None and newest != served:
            self.say(f"{self.model}: Triton serves {served}, newest complete version is {newest}; loading it")
            try:
                self.activate(newest, previous=served)
            except VersionRejected:
                return self.reconcile()
            return newest
        return served

    def rollback(self, to: int | None = None) -> int:
        """Serve version ``to`` (default: the one before the served one) and retire the newer ones."""
        available = self.versions()
        served = self.served_version()
        if to is None:
            older = [v for v in available if served is None or v < served]
            if not older:
                raise ValueError(f"{self.model}: no version older than {served} to roll back to")
            to = older[-1]
        if to not in available:
            raise ValueError(f"{self.model}: version {to} is not a complete version here (have {available})")
        with self._client() as client:
            self._load(client, to)
        for version in available:
            if version > to:
                self.retire(version)
        self.say(f"{self.model}: rolled back to {to}")
        return to

    def prune(self, keep: int) -> list[int]:
        """Delete all but the newest ``keep`` complete versions (never the served one) and retired
        versions beyond ``keep``; returns the deleted numbers."""
        served = self.served_version()
        deleted = []
        for version in self.versions()[:-keep] if keep else self.versions():
            if version != served:
                shutil.rmtree(self.model_dir / str(version), ignore_errors=True)
                deleted.append(version)
        for version in self.retired()[:-keep]:
            shutil.rmtree(self.retired_dir / str(version), ignore_errors=True)
            deleted.append(version)
        return deleted


def describe(infos: list[VersionInfo]) -> str:
    return json.dumps([info.as_dict() for info in infos], indent=2, default=str)
