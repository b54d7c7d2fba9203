"""RBD pools: run in Ceph through the bindings, then recorded under /ceph/pools as v0.6 nodes did."""

from __future__ import annotations

import json
import re

from pvc_core import matching
from pvc_core.errors import ApiError, BadRequest, NotFound
from pvc_core.routes import quoted

from . import schema
from .area import CephArea, bounded

NAME = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.-]+$")  # not "." or "..": those are no ZooKeeper key
REPLCFG = re.compile(r"^copies=(\d+),mincopies=(\d+)$")


def ceph_failure(what: str, ret: int, reason: str) -> ApiError:
    """Ceph refused: 409 when the object exists or is busy, else 400; Ceph's reason in the message."""
    status = 409 if ret in (-17, -16) else 400  # EEXIST, EBUSY
    return ApiError(f"ERROR: Failed to {what}: {reason or f'error {ret}'}", status)


class Pools(CephArea):
    def _objects(self, names: list[str]) -> list[dict]:
        stats = self.read_stats(schema.pool(name, "stats") for name in names)
        return [{"name": name, "stats": stats[schema.pool(name, "stats")]} for name in names]

    def names(self) -> list[str]:
        return sorted(self.zk.children(schema.POOLS) or [])

    def list(self, limit: str | None) -> list[dict]:
        names = self.names()
        if limit:
            pattern = matching.regex(limit)  # v0.6: prefix match, no wrapping
            names = [name for name in names if pattern.match(name)]
        if not names:
            raise NotFound("Pool not found.")
        return self._objects(names)

    def get(self, name: str) -> dict:
        if name not in self.names():
            raise NotFound("Pool not found.")
        return self._objects([name])[0]

    @bounded('create RBD pool "{0}"')
    def add(self, name: str, pgs: int, replcfg: str) -> str:
        if not NAME.match(name):
            raise BadRequest(f"Parameter 'pool': expected a pool name of letters, digits, '_', '.', '-' "
                             f"(not '.' or '..'), got {name!r}")
        if pgs < 1:
            raise BadRequest(f"Parameter 'pgs': expected a positive integer, got {pgs!r}")
        match = REPLCFG.match(replcfg)
        copies, mincopies = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        if not match or copies < 1 or not 1 <= mincopies <= copies:
            raise BadRequest(f"Parameter 'replcfg': expected copies=<N>,mincopies=<M> with 1 <= M <= N, "
                             f"got {replcfg!r}")
        if self.zk.exists(schema.pool(name)):
            raise BadRequest(f'ERROR: A pool with name "{name}" already exists.')
        available = self.osds_up_and_in()
        if copies > available:
            raise BadRequest(f"Parameter 'replcfg': asks for {copies} copies, but {available} OSD(s) are up and in; "
                             f"expected copies=<N> with N at most {available} (a pool with more copies than that "
                             "never becomes active)")
        steps = [("osd pool create", {"pool": name, "pg_num": pgs, "pool_type": "replicated"}),
                 # a single copy is what replcfg asked for; Ceph wants that confirmed
                 ("osd pool set", {"pool": name, "var": "size", "val": str(copies),
                                   **({"yes_i_really_mean_it": True} if copies == 1 else {})}),
                 ("osd pool set", {"pool": name, "var": "min_size", "val": str(mincopies)}),
                 ("osd pool application enable", {"pool": name, "app": "rbd"})]
        for index, (prefix, args) in enumerate(steps):
            ret, _, reason = self.client.run(prefix, **args)
            if ret != 0:
                if index:  # undo the half-made pool
                    self._remove_in_ceph(name)
                raise ceph_failure(f'create RBD pool "{name}"', ret, reason)
        try:
            self.zk.create({schema.pool(name): "", schema.pool(name, "pgs"): pgs, schema.pool(name, "stats"): "{}",
                            f"{schema.VOLUMES}/{name}": "", f"{schema.SNAPSHOTS}/{name}": ""})
        except ApiError:
            self._remove_in_ceph(name)
            raise
        # not quote-rewritten, as in v0.6
        return f'Created new RBD pool "{name}" with "{pgs}" PGs and replication configuration {replcfg}.'

    def osds_up_and_in(self) -> int:
        """How many OSDs are up and in now (Ceph's OSD map, not the collected statistics)."""
        dump = json.loads(self.client.mon_command("osd dump", format="json"))
        return sum(1 for osd in dump.get("osds", []) if osd.get("up") == 1 and osd.get("in") == 1)

    def _remove_in_ceph(self, name: str) -> tuple[int, str]:
        ret, _, reason = self.client.run("osd pool rm", pool=name, pool2=name, yes_i_really_really_mean_it=True)
        return ret, reason

    @bounded('remove RBD pool "{0}"')
    def remove(self, name: str) -> str:
        if not self.zk.exists(schema.pool(name)):
            raise NotFound(quoted(f'ERROR: No pool with name "{name}" is present in the cluster.'))
        ret, reason = self._remove_in_ceph(name)
        if ret not in (0, -2):  # ENOENT: already gone in Ceph; the keys still go
            raise ceph_failure(f'remove RBD pool "{name}"', ret, reason)
        self.zk.delete([schema.pool(name), f"{schema.VOLUMES}/{name}", f"{schema.SNAPSHOTS}/{name}"])
        return quoted(f'Removed RBD pool "{name}" and all volumes.')

    def statistics(self) -> dict[str, str]:
        """/ceph/pools/<pool>/stats values (ceph.md §2.3), paired by pool name."""
        import rados
        names = self.names()
        if not names:
            return {}
        df = json.loads(self.client.mon_command("df", format="json"))
        by_name = {pool["name"]: pool for pool in df.get("pools", [])}
        out = {}
        for name in names:
            pool = by_name.get(name)
            if pool is None:
                continue
            stats = pool.get("stats", {})
            with self.client.handle() as cluster:
                try:
                    ioctx = cluster.open_ioctx(name)
                except rados.Error:
                    continue
                try:
                    rados_stats = ioctx.get_stats()
                finally:
                    ioctx.close()
            out[schema.pool(name, "stats")] = json.dumps({
                "id": pool.get("id"), "free_bytes": stats.get("max_avail", 0),
                "used_bytes": stats.get("bytes_used", 0), "used_percent": stats.get("percent_used", 0),
                "num_objects": stats.get("objects", 0),
                "num_object_clones": rados_stats.get("num_object_clones", 0),
                "num_object_copies": rados_stats.get("num_object_copies", 0),
                "num_objects_missing_on_primary": rados_stats.get("num_objects_missing_on_primary", 0),
                "num_objects_unfound": rados_stats.get("num_objects_unfound", 0),
                "num_objects_degraded": rados_stats.get("num_objects_degraded", 0),
                "read_ops": rados_stats.get("num_rd", 0), "read_bytes": rados_stats.get("num_rd_kb", 0) * 1024,
                "write_ops": rados_stats.get("num_wr", 0), "write_bytes": rados_stats.get("num_wr_kb", 0) * 1024,
            })
        return out
