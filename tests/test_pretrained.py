"""Pretrained weights by name: download, cache, checks, failures, against a real HTTP
server on 127.0.0.1 serving a synthetic RedNet-26 `.pdparams` (never the internet)."""

import http.server
import json
import os
import pickle
import threading
import time

import jax
import numpy as np
import pytest
from helpers import paddle_state, random_rednet_variables

from involution_jax.cli import convert as convert_command
from involution_jax.models.rednet import RedNet
from involution_jax.weights import convert, mmcls, pretrained, zoo

FILE = zoo.REGISTRY["rednet26"].filename


@pytest.fixture(scope="module")
def weights():
  """(variables, .pdparams bytes) of a RedNet-26 with random values (positive variances)."""
  variables = random_rednet_variables(26)
  blob = pickle.dumps(paddle_state(mmcls.from_flax(variables)), protocol=4)
  return variables, blob


class Server:
  """Serves `files` ({name: bytes}) from /files/; `mode` makes it misbehave."""

  def __init__(self):
    self.files, self.mode, self.requests = {}, "ok", []
    self.release = threading.Event()
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def log_message(self, *args):
        pass

      def do_GET(self):
        server.requests.append(self.path)
        name = self.path.rpartition("/")[2]
        if server.mode == "hang":  # accepts the connection, never answers
          server.release.wait(30)
          return
        if name not in server.files:
          self.send_error(404)
          return
        body = server.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.mode == "truncate":  # promises the whole file, sends half, hangs up
          self.wfile.write(body[: len(body) // 2])
          self.close_connection = True
          return
        self.wfile.write(body)

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files"
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self.thread.start()

  def close(self):
    self.release.set()
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture
def server(monkeypatch, tmp_path, weights):
  serving = Server()
  serving.files[FILE] = weights[1]
  monkeypatch.setenv(zoo.URL_ENV, serving.url)
  monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
  yield serving
  serving.close()


def _cache(tmp_path):
  return tmp_path / "cache"


def _assert_same(variables, expected):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables), expected)


def test_first_download_then_cached_without_network(server, tmp_path, weights):
  model, variables = pretrained.load("rednet26", quiet=True)
  assert isinstance(model, RedNet) and model.depth == 26 and model.num_classes == 1000
  _assert_same(variables, weights[0])
  assert server.requests == [f"/files/{FILE}"]
  cache = _cache(tmp_path)
  assert sorted(os.listdir(cache)) == sorted([FILE, zoo.MANIFEST])  # no partial files left
  manifest = json.loads((cache / zoo.MANIFEST).read_text())
  assert manifest[FILE]["size"] == len(weights[1])
  assert manifest[FILE]["source"] == f"{server.url}/{FILE}"
  server.close()  # the network is gone: the cache serves
  os.environ[zoo.URL_ENV] = "http://127.0.0.1:9/files"  # discard port: nothing listens
  _, again = pretrained.load("rednet26")
  _assert_same(again, weights[0])
  assert len(server.requests) == 1


def test_names_work_wherever_a_weights_path_does(server, tmp_path, weights, capsys, monkeypatch):
  variables, info = convert.load_weights("rednet26")
  assert info.model == "rednet26" and info.num_classes == 1000
  _assert_same(variables, weights[0])
  out = tmp_path / "ckpt"
  assert convert_command.main(["rednet26", str(out)]) == 0
  assert "rednet26 (1000 classes)" in capsys.readouterr().out
  _assert_same(convert.load_weights(str(out))[0], weights[0])
  os.makedirs(tmp_path / "work" / "rednet26")  # an existing path of that name wins
  monkeypatch.chdir(tmp_path / "work")
  with pytest.raises(FileNotFoundError):
    convert.load_weights("rednet26")


def test_truncated_download_leaves_nothing_that_looks_finished(server, tmp_path):
  server.mode = "truncate"
  with pytest.raises(zoo.DownloadError) as error:
    zoo.fetch("rednet26", retries=1, quiet=True)
  message = str(error.value)
  assert f"{server.url}/{FILE}" in message and str(_cache(tmp_path) / FILE) in message
  assert "\n" not in message
  assert len(server.requests) == 2  # retried once
  assert os.listdir(_cache(tmp_path)) == []
  server.mode = "ok"
  assert os.path.getsize(zoo.fetch("rednet26", quiet=True)) == len(server.files[FILE])


def test_corrupted_cache_is_reported_and_fetched_again(server, tmp_path, weights, capsys):
  path = zoo.fetch("rednet26", quiet=True)
  with open(path, "r+b") as f:  # same size, one byte flipped
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ 0xFF]))
  capsys.readouterr()
  _, variables = pretrained.load("rednet26")
  assert "is damaged" in capsys.readouterr().err
  _assert_same(variables, weights[0])
  assert len(server.requests) == 2


def test_dead_link_is_one_line_with_url_and_manual_path(server, tmp_path):
  del server.files[FILE]
  with pytest.raises(zoo.DownloadError, match="404") as error:
    pretrained.load("rednet26", retries=3)
  assert len(server.requests) == 1  # a 404 is not retried
  assert str(_cache(tmp_path) / FILE) in str(error.value)
  assert "by hand" in str(error.value)


def test_a_server_that_never_answers_fails_in_bounded_time(server):
  server.mode = "hang"
  start = time.monotonic()
  with pytest.raises(zoo.DownloadError, match="timed out"):
    zoo.fetch("rednet26", timeout=0.3, retries=1, quiet=True)
  assert time.monotonic() - start < 10
  assert len(server.requests) == 2


def test_a_file_downloaded_by_hand_is_picked_up(monkeypatch, tmp_path, weights):
  monkeypatch.setenv(zoo.URL_ENV, "http://127.0.0.1:9/files")  # offline
  monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
  with pytest.raises(zoo.DownloadError, match=r"127\.0\.0\.1:9/files/RedNet26"):
    zoo.fetch("rednet26", timeout=2, retries=0)
  os.makedirs(tmp_path / "cache", exist_ok=True)
  (tmp_path / "cache" / FILE).write_bytes(weights[1])
  _, variables = pretrained.load("rednet26")
  _assert_same(variables, weights[0])
  manifest = json.loads((tmp_path / "cache" / zoo.MANIFEST).read_text())
  assert manifest[FILE]["source"] == "found in cache"


def test_a_file_of_the_wrong_depth_is_refused(server, weights):
  server.files[zoo.REGISTRY["rednet50"].filename] = weights[1]  # a RedNet-26 under 50's name
  with pytest.raises(ValueError, match="depth=50 given, but the state dict is RedNet-26"):
    pretrained.load("rednet50")


def test_unknown_name():
  with pytest.raises(ValueError, match="unknown pretrained model 'rednet51'; known: rednet26"):
    pretrained.load("rednet51")
  assert pretrained.names() == ("rednet26", "rednet38", "rednet50", "rednet101", "rednet152")


def test_pretrained_weights_load_into_nnx(server, weights):
  from involution_jax import nnx as inv_nnx

  model = inv_nnx.from_weights("rednet26")
  assert model.use_running_average
  _assert_same(inv_nnx.linen_variables(model), weights[0])
