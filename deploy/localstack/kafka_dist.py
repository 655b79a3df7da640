"""The Kafka broker's jars, fetched once from Maven Central into a cache shared by all checkouts."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from deploy.localstack.errors import StackError
from deploy.localstack.tools import JAVA_MAVEN_INSTALL, require_tool

log = logging.getLogger(__name__)

DEFAULT_POM = Path(__file__).resolve().parent.parent / "kafka" / "pom.xml"
# Written last into a finished download; a cache directory without it is never used.
COMPLETE_MARKER = ".complete"


class KafkaDistribution:
    """``<cache_dir>/kafka-<version>/libs``: the broker's runtime classpath, resolved by Maven."""

    def __init__(
        self, cache_dir: Path, version: str, *, pom: Path = DEFAULT_POM, search_path: str | None = None
    ) -> None:
        self.cache_dir = cache_dir
        self.version = version
        self.pom = pom
        self.search_path = search_path

    @property
    def home(self) -> Path:
        return self.cache_dir / f"kafka-{self.version}"

    @property
    def libs_dir(self) -> Path:
        return self.home / "libs"

    @property
    def classpath(self) -> str:
        """The JVM classpath wildcard for the jars (expanded by java itself, not by a shell)."""
        return f"{self.libs_dir}/*"

    def is_fetched(self) -> bool:
        return (self.home / COMPLETE_MARKER).is_file()

    def ensure(self) -> Path:
        """Fetch the jars unless a complete copy is cached; return the libs directory.

        Maven writes into a temporary sibling directory that is renamed into place only after it
        finished, so an interrupted fetch leaves nothing that looks like a usable cache.
        """
        if self.is_fetched():
            return self.libs_dir
        mvn = require_tool("mvn", JAVA_MAVEN_INSTALL, self.search_path)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        log.info("Fetching Kafka %s jars from Maven Central into %s (once)", self.version, self.home)
        staging = Path(tempfile.mkdtemp(prefix=f".kafka-{self.version}-", dir=self.cache_dir))
        try:
            self._download(mvn, staging / "libs")
            (staging / COMPLETE_MARKER).write_text(f"kafka {self.version}\n")
            self._install(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.libs_dir

    def _download(self, mvn: str, libs: Path) -> None:
        argv = [
            mvn, "-B", "-q", "-f", str(self.pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}", f"-Dkafka.version={self.version}",
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        jar = libs / f"kafka_2.13-{self.version}.jar"
        if result.returncode != 0 or not jar.is_file():
            output = (result.stdout + result.stderr).strip()[-3000:]
            raise StackError(
                f"Fetching Kafka {self.version} with Maven failed (exit {result.returncode}); "
                f"check network access to Maven Central.\n$ {' '.join(argv)}\n{output}"
            )

    def _install(self, staging: Path) -> None:
        if self.is_fetched():
            return  # a concurrent `stack up` finished the same download first
        if self.home.exists():
            # Left by an older, interrupted layout; it has no marker, so nothing uses it.
            shutil.rmtree(self.home)
        try:
            staging.rename(self.home)
        except OSError:
            # Another `stack up` finished the same download first; its copy is as good as ours.
            if not self.is_fetched():
                raise
