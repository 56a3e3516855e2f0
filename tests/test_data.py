import functools
import http.server
import shutil
import threading

import numpy as np
import pytest

from nasbench_ptb.builder import data


def test_standard_counts_and_vocab(ptb_path):
    corpus = data.load(ptb_path)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (929_589, 73_760, 82_430)
    assert corpus.ntokens == 10_000 and "<eos>" in corpus.vocab and "<unk>" in corpus.vocab
    assert corpus.train.dtype == np.int64 and corpus.train.max() < 10_000
    assert corpus.vocab[corpus.train[0]] == "aer"


def test_lookup_order_env_then_error(ptb_path, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NASBENCH_PTB_DATA", str(ptb_path))
    assert data.locate() == ptb_path
    # a named folder must hold the files: never skipped for the cache or a download, and the error names it
    monkeypatch.setenv("NASBENCH_PTB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(data.DataError, match=r"\$NASBENCH_PTB_DATA=.*nowhere is not a folder"):
        data.locate()
    partial = _copy(ptb_path, tmp_path / "partial")
    (partial / "ptb.test.txt").unlink()
    monkeypatch.setenv("NASBENCH_PTB_DATA", str(partial))
    with pytest.raises(data.DataError, match=r"\$NASBENCH_PTB_DATA=.*partial lacks ptb.test.txt; it must hold"):
        data.locate()
    with pytest.raises(data.DataError, match="lacks ptb.train.txt, ptb.valid.txt, ptb.test.txt"):
        data.locate(tmp_path)  # --data wins over the environment
    monkeypatch.delenv("NASBENCH_PTB_DATA")
    with pytest.raises(data.DataError, match="PTB not found"):
        data.locate(allow_download=False)


def _copy(ptb_path, dest):
    dest.mkdir(parents=True)
    for split in data.SPLITS:
        shutil.copy(ptb_path / data.filename(split), dest / data.filename(split))
    return dest


def test_corrupted_or_truncated_file_is_refused(ptb_path, tmp_path):
    d = _copy(ptb_path, tmp_path / "ptb")
    path = d / "ptb.valid.txt"
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2])  # truncated
    with pytest.raises(data.DataError) as err:
        data.load(d)
    msg = str(err.value)
    assert "ptb.valid.txt" in msg and data.SHA256["valid"] in msg and data.sha256_file(path) in msg


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_good_files(ptb_path, tmp_path, http_server, monkeypatch):
    root, url = http_server
    _copy(ptb_path, root / "good")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NASBENCH_PTB_DATA", raising=False)
    corpus = data.load(url=f"{url}/good")
    assert len(corpus.valid) == 73_760
    assert sorted(p.name for p in data.cache_dir().iterdir()) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]


def test_download_corrupted_file_is_not_kept(ptb_path, tmp_path, http_server, monkeypatch):
    root, url = http_server
    bad = _copy(ptb_path, root / "bad")
    (bad / "ptb.test.txt").write_bytes(b" the corrupted copy \n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NASBENCH_PTB_DATA", raising=False)
    with pytest.raises(data.DataError, match="ptb.test.txt.*sha256 mismatch"):
        data.load(url=f"{url}/bad")
    assert not (data.cache_dir() / "ptb.test.txt").exists()
    assert not list(data.cache_dir().glob(".*"))  # no temporary leftovers


def test_unreachable_server_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NASBENCH_PTB_DATA", raising=False)
    with pytest.raises(data.DataError, match="cannot download .*--data DIR"):
        data.load(url="http://127.0.0.1:9/none")
