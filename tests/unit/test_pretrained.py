"""Model names -> verified files: Hugging Face and legacy downloads from a loopback server,
the cache (hits offline, corruption, interrupted downloads), ``--repo`` folders, errors."""
import hashlib
import http.server
import json
import re
import sys
import threading
import urllib.parse
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml

import numba_demucs
from numba_demucs import (BagOfModels, CheckpointError, ChecksumError, DownloadError, HTDemucs,
                          UnknownModelError, UnsupportedModelError, pretrained)
from numba_demucs.debug import reference
from numba_demucs.pretrained import catalog, download

TINY = dict(channels=8, dconv_comp=4, segment=Fraction(1, 4), t_layers=1, bottom_channels=16,
            dconv_mode=3)
SIGS = ("aaaa0001", "aaaa0002")
WEIGHTS = [[1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 0.0, 0.5]]
COMMIT = "c0ffee" + "0" * 34


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder laid out like both remotes: ``{namespace}/{repo}/{file}`` for Hugging Face
    (served under ``/resolve/main/``) and ``test/{SIG-CHECKSUM}.th`` for the legacy files."""
    root = tmp_path_factory.mktemp("remote")
    hf = root / "adefossez" / "HTDemucs-ft"
    hf.mkdir(parents=True)
    legacy = root / "test"
    legacy.mkdir()
    states, legacy_files = {}, {}
    for seed, sig in enumerate(SIGS, start=3):
        model = reference.build_model("htdemucs", seed=seed, **TINY)
        states[sig] = {k: v.half().float().numpy() for k, v in model.state_dict().items()}
        reference.save_safetensors(model, hf, sig)
        legacy_files[sig] = "test/" + reference.save_th(model, legacy, sig).name
    (hf / "htdemucs_ft.yaml").write_text(yaml.safe_dump({"models": list(SIGS), "weights": WEIGHTS}))
    return root, states, legacy_files


@pytest.fixture
def tables(monkeypatch, served):
    """Adds a legacy bag ``tinybag`` (no Hugging Face repository) made of the served files."""
    _, _, legacy_files = served
    monkeypatch.setattr(catalog, "LEGACY_FILES", {**catalog.LEGACY_FILES, **legacy_files})
    monkeypatch.setattr(catalog, "BAGS", {
        **catalog.BAGS, "tinybag": catalog.BagSpec(SIGS, WEIGHTS)})
    monkeypatch.setattr(catalog, "IMPLEMENTED", catalog.IMPLEMENTED | set(SIGS))
    monkeypatch.setattr(catalog, "CLASSES", {**catalog.CLASSES, **dict.fromkeys(SIGS, "HTDemucs")})


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Remote(http.server.BaseHTTPRequestHandler):
    """Plays huggingface.co (LFS files redirect to a CDN with X-Linked-Etag = sha256; git files
    carry ETag = git blob id) and dl.fbaipublicfiles.com (plain files)."""

    root: Path
    # "ok" | "truncate" (half the bytes, then close) | "truncate-cdn" (only LFS files) |
    # "wrong" (every byte altered) | "no-etag" (no checksum headers)
    mode = "ok"
    log: list

    def log_message(self, *args):
        pass

    def _fail(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, file: Path, headers=(), cdn=False):
        data = file.read_bytes()
        if self.mode == "wrong":
            data = bytes(b ^ 0x5A for b in data)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        if self.mode == "truncate" or (self.mode == "truncate-cdn" and cdn):
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)

    def do_GET(self):
        path = urllib.parse.unquote(self.path.split("?", 1)[0]).lstrip("/")
        self.log.append(path)
        match = re.fullmatch(r"([^/]+/[^/]+)/resolve/main/([^/]+)", path)
        if match:
            file = self.root / match[1] / match[2]
            if not file.is_file():
                return self._fail(404)
            if file.suffix == ".safetensors":
                data = file.read_bytes()
                self.send_response(302)
                self.send_header("Location", f"/cdn/{match[1]}/{match[2]}")
                if self.mode != "no-etag":
                    self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            blob_id = _git_sha1(file.read_bytes())
            etag = () if self.mode == "no-etag" else (("ETag", f'"{blob_id}"'),)
            return self._send(file, etag + (("X-Repo-Commit", COMMIT),))
        if path.startswith("cdn/"):
            path = path[len("cdn/"):]
            file = self.root / path
            return self._send(file, (("ETag", '"some-cdn-etag"'),), cdn=True) if file.is_file() \
                else self._fail(404)
        file = self.root / path
        return self._send(file) if file.is_file() else self._fail(404)


class _Server:
    def __init__(self, root, mode):
        handler = type("Handler", (_Remote,), {"root": root, "mode": mode, "log": []})
        self.log = handler.log
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if self.thread is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()
            self.thread = None


@pytest.fixture
def remote(served, monkeypatch, tmp_path):
    """``start(mode)`` runs a loopback server and points NUMBA_DEMUCS_REMOTE and the cache at it."""
    root = served[0]
    servers = []
    monkeypatch.setenv("NUMBA_DEMUCS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NUMBA_DEMUCS_OFFLINE", raising=False)

    def start(mode="ok"):
        for server in servers:
            server.stop()
        server = _Server(root, mode)
        servers.append(server)
        monkeypatch.setenv("NUMBA_DEMUCS_REMOTE", server.url)
        return server

    yield start
    for server in servers:
        server.stop()


def _cache_files(tmp_path):
    return sorted(p.relative_to(tmp_path / "cache").as_posix()
                  for p in (tmp_path / "cache").rglob("*") if p.is_file())


def _assert_parameters(model, state):
    params = dict(model.parameters())
    assert params
    for key, value in params.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


def _assert_bag(bag, states):
    assert isinstance(bag, BagOfModels)
    assert bag.weights == WEIGHTS
    assert len(bag.models) == 2
    for member, sig in zip(bag.models, SIGS):
        _assert_parameters(member, states[sig])


# -- Hugging Face ------------------------------------------------------------------------

def test_hf_fresh_download_of_a_bag(remote, served, tmp_path):
    root, states, _ = served
    server = remote()
    bag = pretrained.get_model("htdemucs_ft")
    _assert_bag(bag, states)
    folder = tmp_path / "cache" / "hf" / "adefossez" / "HTDemucs-ft"
    assert pretrained.resolve("htdemucs_ft") == folder / "htdemucs_ft.yaml"
    for name in ("htdemucs_ft.yaml",) + tuple(f"{sig}.safetensors" for sig in SIGS):
        assert _sha256(folder / name) == _sha256(root / "adefossez" / "HTDemucs-ft" / name)
        record = json.loads((folder / f"{name}.meta.json").read_text())
        assert record["sha256"] == _sha256(folder / name)
        assert record["verified_against"] == ("git-sha1" if name.endswith(".yaml") else "sha256")
        assert record["commit"] == COMMIT
    assert not [p for p in _cache_files(tmp_path) if ".part-" in p]
    # the safetensors came through the hub's redirect to the CDN
    assert "cdn/adefossez/HTDemucs-ft/aaaa0001.safetensors" in server.log
    assert not any(path.startswith("hybrid_transformer/") for path in server.log)


def test_cache_hit_with_the_server_stopped(remote, served, tmp_path):
    _, states, _ = served
    server = remote()
    pretrained.resolve("htdemucs_ft")
    requests = len(server.log)
    server.stop()
    _assert_bag(numba_demucs.load_model("htdemucs_ft"), states)
    assert len(server.log) == requests


def test_offline_flag_with_a_warm_cache_and_a_cold_one(remote, served, tmp_path, monkeypatch):
    server = remote()
    pretrained.resolve("htdemucs_ft")
    monkeypatch.setenv("NUMBA_DEMUCS_OFFLINE", "1")
    requests = len(server.log)
    assert pretrained.resolve("htdemucs_ft").is_file()
    with pytest.raises(DownloadError, match="NUMBA_DEMUCS_OFFLINE"):
        pretrained.resolve("htdemucs_6s")
    assert len(server.log) == requests


def test_corrupted_cache_is_fetched_again(remote, served, tmp_path):
    root, states, _ = served
    server = remote()
    pretrained.resolve("htdemucs_ft")
    cached = tmp_path / "cache" / "hf" / "adefossez" / "HTDemucs-ft" / "aaaa0002.safetensors"
    original = _sha256(cached)
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    server.log.clear()
    _assert_bag(numba_demucs.load_model("htdemucs_ft"), states)
    assert _sha256(cached) == original
    assert server.log == ["adefossez/HTDemucs-ft/resolve/main/aaaa0002.safetensors",
                          "cdn/adefossez/HTDemucs-ft/aaaa0002.safetensors"]


def test_corrupted_cache_with_the_server_gone_is_a_clear_error(remote, served, tmp_path):
    server = remote()
    path = pretrained.resolve("htdemucs_ft")
    path.write_text(path.read_text() + "\n# edited\n")
    server.stop()
    with pytest.raises(DownloadError) as error:
        pretrained.resolve("htdemucs_ft")
    message = str(error.value)
    assert "corrupt" in message and "htdemucs_ft.yaml" in message
    assert "cannot reach the server" in message
    assert not path.exists()


def test_interrupted_download_leaves_nothing(remote, tmp_path):
    remote("truncate")
    with pytest.raises(DownloadError, match="connection"):
        pretrained.resolve("hf://htdemucs_ft")
    files = _cache_files(tmp_path) if (tmp_path / "cache").exists() else []
    assert files == []


def test_member_cut_off_midway_then_completed(remote, served, tmp_path):
    """The hub's redirect succeeds, the CDN drops the connection: no member file, no temp;
    the verified yaml stays, and the next run fetches only what is missing."""
    _, states, _ = served
    remote("truncate-cdn")
    with pytest.raises(DownloadError, match=r"aaaa0001\.safetensors: connection closed after"):
        pretrained.resolve("hf://htdemucs_ft")
    assert _cache_files(tmp_path) == ["hf/adefossez/HTDemucs-ft/htdemucs_ft.yaml",
                                      "hf/adefossez/HTDemucs-ft/htdemucs_ft.yaml.meta.json"]
    server = remote()
    _assert_bag(numba_demucs.load_model("hf://htdemucs_ft"), states)
    assert not any(path.endswith(".yaml") for path in server.log)


def test_wrong_bytes_from_the_hub_are_rejected(remote, tmp_path):
    remote("wrong")
    with pytest.raises(ChecksumError, match="checksum mismatch") as error:
        pretrained.resolve("hf://htdemucs_ft")
    assert "/adefossez/HTDemucs-ft/resolve/main/htdemucs_ft.yaml" in str(error.value)
    assert _cache_files(tmp_path) == []


def test_hub_without_checksums_is_accepted_but_recorded(remote, served, tmp_path, caplog):
    _, states, _ = served
    remote("no-etag")
    with caplog.at_level("WARNING", logger="numba_demucs.pretrained"):
        _assert_bag(numba_demucs.load_model("hf://adefossez/htdemucs_ft"), states)
    assert "gave no checksum" in caplog.text
    folder = tmp_path / "cache" / "hf" / "adefossez" / "HTDemucs-ft"
    sidecar = folder / "aaaa0001.safetensors.meta.json"
    assert json.loads(sidecar.read_text())["verified_against"] == "none"


def test_progress_callback_and_interruption(remote, served, tmp_path):
    root = served[0]
    remote()
    calls = []
    pretrained.resolve("hf://htdemucs_ft", progress=lambda done, total: calls.append((done, total)))
    sizes = {(root / "adefossez" / "HTDemucs-ft" / name).stat().st_size
             for name in ("htdemucs_ft.yaml", "aaaa0001.safetensors", "aaaa0002.safetensors")}
    assert {done for done, total in calls if done == total} == sizes

    def stop(done, total):
        if done:
            raise KeyboardInterrupt

    for file in (tmp_path / "cache").rglob("*.safetensors*"):
        file.unlink()
    with pytest.raises(KeyboardInterrupt):
        pretrained.resolve("hf://htdemucs_ft", progress=stop)
    assert not [p for p in _cache_files(tmp_path) if "safetensors" in p]


def test_rich_progress_bar_runs(remote, tmp_path):
    remote()
    assert pretrained.resolve("hf://htdemucs_ft", progress=True).is_file()


# -- legacy .th files --------------------------------------------------------------------

def test_legacy_fallback_download_and_cache(remote, served, tables, tmp_path):
    root, states, legacy_files = served
    server = remote()
    bag = numba_demucs.load_model("tinybag")
    _assert_bag(bag, states)
    assert "adefossez/Demucs-tinybag/resolve/main/tinybag.yaml" in server.log   # tried first
    folder = tmp_path / "cache" / "legacy"
    for sig in SIGS:
        name = legacy_files[sig].split("/")[1]
        assert _sha256(folder / name) == _sha256(root / legacy_files[sig])
        assert _sha256(folder / name).startswith(name[len(sig) + 1:-3])
    assert yaml.safe_load((folder / "tinybag.yaml").read_text()) == {
        "models": list(SIGS), "weights": WEIGHTS}
    single = numba_demucs.load_model(SIGS[0])
    assert isinstance(single, HTDemucs)
    _assert_parameters(single, states[SIGS[0]])
    # a signature goes straight to the legacy file, never to the hub
    server.stop()
    assert pretrained.resolve(SIGS[1]) == folder / legacy_files[SIGS[1]].split("/")[1]


def test_legacy_download_of_a_demucs_v3_bag(remote, served, monkeypatch, tmp_path):
    """A bag of an HDemucs and a time-domain Demucs through the legacy SIG-CHECKSUM.th path
    (no Hugging Face repository), its segment set on both members as demucs does."""
    root = served[0]
    files = {}
    for seed, (sig, architecture) in enumerate((("bbbb0001", "hdemucs_mmi"),
                                                ("bbbb0002", "demucs_0d19c1c6"))):
        model = reference.build_model(architecture, seed=seed, channels=8)
        files[sig] = "test/" + reference.save_th(model, root / "test", sig).name
    monkeypatch.setattr(catalog, "LEGACY_FILES", {**catalog.LEGACY_FILES, **files})
    monkeypatch.setattr(catalog, "BAGS", {**catalog.BAGS,
                                          "v3bag": catalog.BagSpec(tuple(files), segment=44)})
    monkeypatch.setattr(catalog, "IMPLEMENTED", catalog.IMPLEMENTED | set(files))
    monkeypatch.setattr(catalog, "CLASSES", {**catalog.CLASSES, "bbbb0001": "HDemucs",
                                             "bbbb0002": "Demucs"})
    assert pretrained.list_models()["v3bag"].startswith("bag of 1 HDemucs + 1 Demucs")
    server = remote()
    bag = numba_demucs.load_model("v3bag")
    assert [type(m).__name__ for m in bag.models] == ["HDemucs", "Demucs"]
    assert [m.segment for m in bag.models] == [44, 44]   # HDemucs' own was 40
    assert "adefossez/Demucs-v3bag/resolve/main/v3bag.yaml" in server.log   # tried first
    assert [p for p in server.log if p.startswith("test/")] == list(files.values())


def test_legacy_corrupted_cache_is_fetched_again(remote, served, tables, tmp_path):
    root, _, legacy_files = served
    server = remote()
    path = pretrained.resolve(SIGS[0])
    path.write_bytes(path.read_bytes()[:-10])
    server.log.clear()
    assert pretrained.resolve(SIGS[0]) == path
    assert _sha256(path) == _sha256(root / legacy_files[SIGS[0]])
    assert server.log == [legacy_files[SIGS[0]]]


def test_legacy_wrong_checksum_is_an_error(remote, tables, tmp_path):
    remote("wrong")
    with pytest.raises(ChecksumError) as error:
        pretrained.resolve("tinybag")
    message = str(error.value)
    assert "checksum mismatch" in message and "nothing was saved" in message
    assert "Hugging Face: " in message and "HTTP 404" in message
    assert [p for p in _cache_files(tmp_path) if p.endswith(".th") or ".part-" in p] == []


def test_legacy_interrupted_download_leaves_nothing(remote, tables, tmp_path):
    remote("truncate")
    with pytest.raises(DownloadError, match=r"connection .* bytes"):
        pretrained.resolve(SIGS[0])
    assert _cache_files(tmp_path) == []


def test_unreachable_server_names_the_url(monkeypatch, tmp_path, tables):
    server = _Server(tmp_path, "ok")
    server.stop()
    monkeypatch.setenv("NUMBA_DEMUCS_REMOTE", server.url)
    monkeypatch.delenv("NUMBA_DEMUCS_OFFLINE", raising=False)
    with pytest.raises(DownloadError, match=re.escape(server.url + "/test/aaaa0001-")):
        pretrained.resolve(SIGS[0], cache_dir=tmp_path / "c")


# -- names and errors --------------------------------------------------------------------

def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(UnknownModelError) as error:
        pretrained.resolve("htdemucs_xyz", cache_dir=tmp_path)
    for name in ("htdemucs", "htdemucs_ft", "htdemucs_6s", "955717e8", "hdemucs_mmi", "mdx",
                 "mdx_extra", "repro_mdx_a", "repro_mdx_a_hybrid_only", "repro_mdx_a_time_only",
                 "75fc33f5", "0d19c1c6"):
        assert name in str(error.value)
        assert name in error.value.known
    assert "mdx_q" in error.value.known
    assert "mdx_extra_q" in error.value.known


def test_diffq_bags_are_supported_names():
    """mdx_q and mdx_extra_q (DiffQ-quantized) are known names, no longer refused."""
    known = pretrained.list_models()
    for name in ("mdx_q", "mdx_extra_q"):
        assert name in known and catalog.supported(catalog.BAGS[name].models)
    for sig in catalog.DIFFQ:
        assert sig in known and "DiffQ-quantized" in known[sig]


def test_every_listed_signature_has_a_class_or_is_diffq():
    """Each signature of demucs' lists is either an implemented class or a DiffQ model, and
    the legacy paths are demucs' own (root + SIG-CHECKSUM.th)."""
    assert set(catalog.CLASSES) == set(catalog.LEGACY_FILES)
    assert catalog.DIFFQ == set(catalog.BAGS["mdx_q"].models + catalog.BAGS["mdx_extra_q"].models)
    assert download.legacy_url("75fc33f5") == \
        "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/75fc33f5-1941ce65.th"
    assert download.legacy_url("0d19c1c6") == \
        "https://dl.fbaipublicfiles.com/demucs/mdx_final/0d19c1c6-0f06f20e.th"
    for name in ("hdemucs_mmi", "mdx", "mdx_extra", "mdx_q", "mdx_extra_q", "repro_mdx_a",
                 "repro_mdx_a_hybrid_only", "repro_mdx_a_time_only"):
        assert catalog.supported(catalog.BAGS[name].models), name
    assert [catalog.CLASSES[s] for s in catalog.BAGS["mdx"].models] == \
        ["Demucs", "Demucs", "HDemucs", "HDemucs"]


def test_listing():
    listing = pretrained.list_models()
    assert {"htdemucs", "htdemucs_ft", "htdemucs_6s", "955717e8", "5c90dfd2"} <= set(listing)
    assert "Hugging Face adefossez/HTDemucs-ft" in listing["htdemucs_ft"]
    assert listing["mdx"].startswith("bag of 2 Demucs + 2 HDemucs [0d19c1c6 7ecf8ec1 c511e2ab "
                                     "7d865c68]; Hugging Face adefossez/Demucs-mdx")
    assert listing["mdx_extra_q"].startswith(
        "bag of 4 HDemucs (DiffQ-quantized) [83fc094f 464b36d7 14fc6a69 7fd6ef75]; Hugging Face "
        "adefossez/Demucs-mdx_extra_q")
    assert listing["hdemucs_mmi"].startswith("bag of 1 HDemucs")
    assert listing["75fc33f5"] == "single HDemucs; legacy hybrid_transformer/75fc33f5-1941ce65.th"
    assert listing["83fc094f"] == "single HDemucs, DiffQ-quantized; legacy mdx_final/83fc094f-4a16d450.th"
    # every name of demucs 4.1.0's lists is implemented, and Open-Unmix's three are listed too
    assert pretrained.list_models(include_unsupported=True) == listing
    from numba_demucs.pretrained import openunmix
    assert set(openunmix.CATALOG) == {"umxl", "umxhq", "umx"}
    assert set(listing) == set(catalog.BAGS) | set(catalog.LEGACY_FILES) | set(openunmix.CATALOG)


def test_tables_match_demucs_remote_lists(monkeypatch):
    """Our copy of demucs 4.1.0's remote/files.txt and remote/*.yaml says the same."""
    from demucs import hf, pretrained as official

    monkeypatch.delenv("NUMBA_DEMUCS_REMOTE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert download.hf_url("adefossez/HTDemucs-ft", "htdemucs_ft.yaml") == \
        "https://huggingface.co/adefossez/HTDemucs-ft/resolve/main/htdemucs_ft.yaml"
    assert download.legacy_url("955717e8") == \
        "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"

    urls = official._parse_remote_files(official.REMOTE_ROOT / "files.txt")
    assert {sig: f"{pretrained.LEGACY_ROOT}/{path}"
            for sig, path in catalog.LEGACY_FILES.items()} == urls
    bags = {path.stem: yaml.safe_load(path.read_text())
            for path in official.REMOTE_ROOT.glob("*.yaml")}
    assert set(bags) == set(catalog.BAGS)
    for name, content in bags.items():
        spec = catalog.BAGS[name]
        assert list(spec.models) == content["models"]
        assert spec.weights == content.get("weights")
        assert spec.segment == content.get("segment")
        assert pretrained.hf_repo_name(name) == hf.hf_repo_name(name)
    assert official.DEFAULT_MODEL == pretrained.DEFAULT_MODEL
    assert hf.DEFAULT_NAMESPACE == pretrained.HF_NAMESPACE


def test_cache_dir_rules(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_DEMUCS_CACHE", str(tmp_path / "x"))
    assert pretrained.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("NUMBA_DEMUCS_CACHE")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrained.cache_dir() == tmp_path / "xdg" / "numba-demucs"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pretrained.cache_dir() == tmp_path / "home" / ".cache" / "numba-demucs"


# -- --repo DIR and --checkpoint FILE ----------------------------------------------------

@pytest.fixture
def local_repo(served, tmp_path):
    root, _, legacy_files = served
    folder = tmp_path / "repo"
    folder.mkdir()
    th = folder / legacy_files[SIGS[0]].split("/")[1]
    th.write_bytes((root / legacy_files[SIGS[0]]).read_bytes())
    (folder / f"{SIGS[1]}.safetensors").write_bytes(
        (root / "adefossez" / "HTDemucs-ft" / f"{SIGS[1]}.safetensors").read_bytes())
    (folder / "mine.yaml").write_text(yaml.safe_dump({"models": list(SIGS), "weights": WEIGHTS}))
    return folder, th


def test_local_repo_resolution(local_repo, served, monkeypatch):
    folder, th = local_repo
    _, states, _ = served
    monkeypatch.setenv("NUMBA_DEMUCS_REMOTE", "http://127.0.0.1:9")   # must not be used
    assert pretrained.resolve("mine", repo=folder) == folder / "mine.yaml"
    assert pretrained.resolve(SIGS[0], repo=folder) == th
    assert pretrained.resolve(SIGS[1], repo=str(folder)) == folder / f"{SIGS[1]}.safetensors"
    _assert_bag(numba_demucs.load_model("mine", repo=folder), states)
    assert set(pretrained.list_models(repo=folder)) == {"mine", *SIGS}
    with pytest.raises(UnknownModelError, match="found: aaaa0001, aaaa0002, mine"):
        pretrained.resolve("htdemucs", repo=folder)


def test_local_repo_checks_checksums_and_duplicates(local_repo):
    folder, th = local_repo
    data = bytearray(th.read_bytes())
    data[100] ^= 1
    th.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        pretrained.resolve("mine", repo=folder)
    (folder / f"{SIGS[0]}.th").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="delete all but one"):
        pretrained.resolve("mine", repo=folder)


def test_loading_a_file_checks_the_name_checksum(served, tmp_path):
    root, states, legacy_files = served
    source = root / legacy_files[SIGS[0]]
    _assert_parameters(numba_demucs.load_model(source), states[SIGS[0]])
    copy = tmp_path / source.name
    copy.write_bytes(source.read_bytes() + b"junk")
    with pytest.raises(ChecksumError):
        numba_demucs.load_model(copy)
    with pytest.raises(ChecksumError):
        numba_demucs.load_model(str(copy))
    with pytest.raises(ChecksumError):
        pretrained.load_checkpoint(copy)          # the name kept for compatibility
    assert numba_demucs.ChecksumError is ChecksumError
