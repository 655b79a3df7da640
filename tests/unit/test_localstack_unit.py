"""The local stack manager's pure pieces: config rendering, tool discovery, PID files, process handling.

Nothing here starts Kafka or Redis; where a program must run, a small shell script stands in for it.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.localstack import (
    KafkaNode,
    LocalStack,
    MissingToolError,
    NodeState,
    RedisNode,
    StackError,
    StartupError,
    process,
    tools,
)
from deploy.localstack.kafka_config import new_cluster_id, render_properties, server_properties
from deploy.localstack.kafka_dist import KafkaDistribution
from deploy.localstack.kafka_node import LOG4J_CONFIG
from services.cli.stack import app
from services.settings import Settings, StackSettings

INSTALL_HINT = "apt-get install openjdk-17-jre-headless maven"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_settings(tmp_path: Path) -> StackSettings:
    return StackSettings(
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        redis_port=free_port(),
        start_timeout_s=10,
    )


def script(bin_dir: Path, name: str, body: str) -> Path:
    """An executable stand-in for a real program."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


# Creates the jar Maven would, and counts its invocations in the file named by $CALLS.
FAKE_MVN = """\
echo mvn >> "$CALLS"
for arg in "$@"; do
  case "$arg" in
    -DoutputDirectory=*) out="${arg#-DoutputDirectory=}" ;;
    -Dkafka.version=*) version="${arg#-Dkafka.version=}" ;;
  esac
done
mkdir -p "$out" && touch "$out/kafka_2.13-$version.jar"
"""

# Formats "storage" like kafka.tools.StorageTool: meta.properties in the log.dirs of the -c file.
FAKE_JAVA = """\
echo "java $*" >> "$CALLS"
config=""
while [ $# -gt 0 ]; do
  if [ "$1" = "-c" ]; then config="$2"; fi
  shift
done
dir=$(sed -n 's/^log.dirs=//p' "$config")
mkdir -p "$dir" && echo "cluster.id=fake" > "$dir/meta.properties"
"""


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calls.txt"
    path.touch()
    monkeypatch.setenv("CALLS", str(path))
    return path


# ------------------------------------------------------------------------------------- Kafka config


def test_cluster_id_has_kafkas_format() -> None:
    cluster_id = new_cluster_id()
    assert len(cluster_id) == 22
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert new_cluster_id() != cluster_id


def test_server_properties_make_one_loopback_kraft_node(tmp_path: Path) -> None:
    props = server_properties(port=19092, controller_port=19093, data_dir=tmp_path / "data")
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
        "default.replication.factor",
    ):
        assert props[key] == "1", key
    assert props["num.partitions"] == props["offsets.topic.num.partitions"] == "6"


def test_rendered_properties_are_java_properties() -> None:
    text = render_properties({"a.b": "x", "path": "C:\\dir"}, "generated\nsecond line")
    assert text.splitlines() == ["# generated", "# second line", "a.b=x", "path=C:\\\\dir"]


def test_log4j_config_writes_under_the_state_dir() -> None:
    text = LOG4J_CONFIG.read_text()
    assert "${kafka.logs.dir}/server.log" in text
    assert re.search(r"^log4j\.rootLogger=INFO, serverFile$", text, re.MULTILINE)


# ----------------------------------------------------------------------------- Kafka jars and tools


def test_missing_java_says_what_to_install(tmp_path: Path) -> None:
    node = KafkaNode(stack_settings(tmp_path), search_path=str(tmp_path / "empty-bin"))
    with pytest.raises(MissingToolError, match=r"`java`.*openjdk-17-jre-headless maven"):
        node.start()
    assert not node.pid_file.exists()


def test_missing_maven_says_what_to_install(tmp_path: Path, calls: Path) -> None:
    bin_dir = tmp_path / "bin"
    script(bin_dir, "java", FAKE_JAVA)
    node = KafkaNode(stack_settings(tmp_path), search_path=str(bin_dir))
    with pytest.raises(MissingToolError, match=r"`mvn`.*openjdk-17-jre-headless maven"):
        node.start()


def test_which_is_consulted_for_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name, path=None: None)
    with pytest.raises(MissingToolError, match=INSTALL_HINT):
        tools.require_tool("java", tools.JAVA_MAVEN_INSTALL)


def test_jars_are_fetched_once_into_place(tmp_path: Path, calls: Path) -> None:
    bin_dir = tmp_path / "bin"
    script(bin_dir, "mvn", FAKE_MVN)
    dist = KafkaDistribution(tmp_path / "cache", "3.9.1", search_path=str(bin_dir))
    assert not dist.is_fetched()
    assert dist.ensure() == tmp_path / "cache" / "kafka-3.9.1" / "libs"
    assert dist.ensure() == dist.libs_dir
    assert calls.read_text().split() == ["mvn"]
    assert (dist.libs_dir / "kafka_2.13-3.9.1.jar").is_file()
    assert dist.classpath == f"{dist.libs_dir}/*"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["kafka-3.9.1"]


def test_failed_fetch_leaves_no_half_cache(tmp_path: Path, calls: Path) -> None:
    bin_dir = tmp_path / "bin"
    script(bin_dir, "mvn", 'echo "[ERROR] could not resolve" ; exit 1\n')
    dist = KafkaDistribution(tmp_path / "cache", "3.9.1", search_path=str(bin_dir))
    with pytest.raises(StackError, match="could not resolve"):
        dist.ensure()
    assert list((tmp_path / "cache").iterdir()) == []
    assert not dist.is_fetched()


def test_prepare_formats_storage_once_and_builds_the_java_command(tmp_path: Path, calls: Path) -> None:
    bin_dir = tmp_path / "bin"
    java = script(bin_dir, "java", FAKE_JAVA)
    script(bin_dir, "mvn", FAKE_MVN)
    settings = stack_settings(tmp_path).model_copy(update={"kafka_heap": "768m"})
    node = KafkaNode(settings, search_path=str(bin_dir))

    argv = node._prepare()
    assert node._prepare() == argv
    formats = [line for line in calls.read_text().splitlines() if "StorageTool format" in line]
    assert len(formats) == 1, "storage must be formatted only while meta.properties is missing"
    assert re.search(r"--cluster-id=[A-Za-z0-9_-]{22} -c ", formats[0])

    assert argv[0] == str(java)
    assert argv[-2:] == ["kafka.Kafka", str(node.config_file)]
    assert {"-Xms768m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true"} <= set(argv)
    assert f"-Dlog4j.configuration=file:{LOG4J_CONFIG}" in argv
    assert f"-Dkafka.logs.dir={node.log_dir}" in argv
    assert argv[argv.index("-cp") + 1] == f"{node.distribution.libs_dir}/*"
    assert f"listeners=PLAINTEXT://127.0.0.1:{settings.kafka_port}," in node.config_file.read_text()
    assert node._is_our_process(" ".join(argv))


def test_kafka_of_another_state_dir_is_not_ours(tmp_path: Path) -> None:
    node = KafkaNode(stack_settings(tmp_path))
    other = f"/usr/bin/java -cp x kafka.Kafka {tmp_path}/elsewhere/kafka/server.properties"
    assert not node._is_our_process(other)
    assert node._is_our_process(f"/usr/bin/java -cp x kafka.Kafka {node.config_file}")


# ------------------------------------------------------------------------------------------- Redis


def test_redis_runs_with_an_fsynced_append_only_file(tmp_path: Path) -> None:
    node = RedisNode(stack_settings(tmp_path))
    args = node.server_args()
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--appendonly"] == "yes"
    assert pairs["--appendfsync"] == "everysec"
    assert pairs["--bind"] == "127.0.0.1"
    assert pairs["--daemonize"] == "no"
    assert pairs["--save"] == ""
    assert pairs["--port"] == str(node.port)
    assert pairs["--dir"] == str(node.data_dir)
    assert pairs["--logfile"] == str(node.redis_log)


def test_redis_process_is_recognised_before_and_after_it_retitles(tmp_path: Path) -> None:
    node = RedisNode(stack_settings(tmp_path))
    assert node._is_our_process(f"/usr/bin/redis-server 127.0.0.1:{node.port}")
    assert node._is_our_process(f"/usr/bin/redis-server --bind 127.0.0.1 --port {node.port} --daemonize no")
    assert not node._is_our_process(f"/usr/bin/redis-server 127.0.0.1:{node.port}1")
    assert not node._is_our_process(f"{sys.executable} -m pytest --port {node.port}")


def test_missing_redis_without_install_rights_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    script(bin_dir, "apt-get", "exit 99\n")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(MissingToolError, match="apt-get install redis-server"):
        tools.find_redis_server(str(bin_dir))
    with pytest.raises(MissingToolError, match="apt-get install redis-server"):
        tools.find_redis_server(str(tmp_path / "empty-bin"), allow_install=False)


def test_missing_redis_is_installed_with_apt_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: Path
) -> None:
    bin_dir = tmp_path / "bin"
    # "Installing" puts a redis-server next to the fake apt-get.
    script(
        bin_dir,
        "apt-get",
        """\
        echo "apt-get $*" >> "$CALLS"
        if [ "$1" = install ]; then
          printf '#!/bin/sh\\n' > "$(dirname "$0")/redis-server"; chmod +x "$(dirname "$0")/redis-server"
        fi
        """,
    )
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert tools.find_redis_server(str(bin_dir)) == str(bin_dir / "redis-server")
    assert calls.read_text().splitlines() == ["apt-get update", "apt-get install -y redis-server"]


def test_a_service_that_dies_while_starting_reports_its_log(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    script(bin_dir, "redis-server", 'echo "FATAL: cannot open the AOF" ; exit 1\n')
    node = RedisNode(stack_settings(tmp_path), search_path=str(bin_dir))
    with pytest.raises(StartupError, match="cannot open the AOF"):
        node.start()
    assert not node.pid_file.exists()
    assert not node.is_running()


# ------------------------------------------------------------------------------- PIDs and processes


def test_stale_or_foreign_pid_files_are_ignored(tmp_path: Path) -> None:
    node = RedisNode(stack_settings(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    node.pid_file.parent.mkdir(parents=True)
    # Our own PID is alive but not Redis, like a PID reused after a reboot.
    for content in (str(os.getpid()), str(dead.pid), "not-a-pid", ""):
        node.pid_file.write_text(content)
        assert node.pid is None, content
        assert not node.is_running()
        assert node.status().state is NodeState.STOPPED
        assert node.stop() is None
        assert not node.pid_file.exists(), "stop() clears a stale PID file"


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    ignore_term = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    log_file = tmp_path / "child.out"
    pid = process.start_detached([sys.executable, "-c", ignore_term], log_file=log_file, cwd=tmp_path)
    try:
        # SIGTERM must not arrive before the child has installed its handler.
        deadline = time.monotonic() + 10
        while process.tail(log_file) != "up" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.is_alive(pid)
        assert os.getsid(pid) == pid, "the service runs in its own session"
        process.stop_pid(pid, signal.SIGTERM, timeout_s=0.5)
        assert not process.is_alive(pid)
    finally:
        if process.is_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_pid_files_round_trip(tmp_path: Path) -> None:
    pid_file = tmp_path / "nested" / "x.pid"
    assert process.read_pid(pid_file) is None
    process.write_pid(pid_file, 4242)
    assert process.read_pid(pid_file) == 4242
    assert not pid_file.with_name("x.pid.tmp").exists()


# ------------------------------------------------------------------------------------ facade and CLI


def test_stack_resolves_paths_and_accepts_either_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from_stack = LocalStack(StackSettings(state_dir=Path("rel/stack")))
    from_settings = LocalStack(Settings(stack=StackSettings(state_dir=Path("rel/stack"))))
    assert from_stack.state_dir == from_settings.state_dir == tmp_path / "rel" / "stack"
    assert [node.name for node in from_stack.nodes] == ["redis", "kafka"]
    assert from_stack.kafka.pid_file == tmp_path / "rel" / "stack" / "kafka" / "kafka.pid"


def _env(settings: StackSettings) -> dict[str, str]:
    return {
        "RAPPORT_STACK__STATE_DIR": str(settings.state_dir),
        "RAPPORT_STACK__CACHE_DIR": str(settings.cache_dir),
        "RAPPORT_STACK__KAFKA_PORT": str(settings.kafka_port),
        "RAPPORT_STACK__KAFKA_CONTROLLER_PORT": str(settings.kafka_controller_port),
        "RAPPORT_STACK__REDIS_PORT": str(settings.redis_port),
    }


def test_cli_status_of_a_stopped_stack(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path)
    result = CliRunner().invoke(app, ["status"], env=_env(settings))
    assert result.exit_code == 0, result.output
    assert len(re.findall(r"│ stopped", result.output)) == 2
    assert f"127.0.0.1:{settings.redis_port}" in result.output
    assert f"127.0.0.1:{settings.kafka_port}" in result.output
    assert str(settings.state_dir / "kafka" / "logs" / "server.log") in result.output


def test_cli_up_without_tools_fails_clearly(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path)
    env = {**_env(settings), "PATH": str(tmp_path / "empty-bin")}
    result = CliRunner().invoke(app, ["up"], env=env)
    assert result.exit_code == 1
    assert "redis-server" in result.output
    assert "apt-get install redis-server" in result.output
