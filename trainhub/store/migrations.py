"""Named, append-only migrations. Never edit one that has shipped: add a new one."""

from __future__ import annotations

import secrets
import time
import uuid

import sqlite_utils

MIGRATIONS = sqlite_utils.Migrations("trainhub")


@MIGRATIONS(name="0001_initial")
def initial(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("meta").insert({"key": "instance_id", "value": uuid.uuid4().hex})
    db.table("tokens").create(
        {"id": int, "name": str, "hash": str, "is_admin": int, "created_at": float},
        pk="id",
    )
    db.table("tokens").create_index(["hash"], unique=True)
    db.table("experiments").create({"name": str, "created_at": float}, pk="name")
    db.table("runs").create(
        {
            "seq": int,
            "id": str,
            "experiment": str,
            "number": int,
            "status": str,
            "target": str,
            "node": str,
            "spec": str,
            "snapshot": str,
            "container_id": str,
            "exit_code": int,
            "reason": str,
            "error": str,
            "created_at": float,
            "started_at": float,
            "ended_at": float,
            "cancel_requested_at": float,
        },
        pk="seq",
        not_null={"id", "experiment", "number", "status", "spec", "created_at"},
        foreign_keys=[("experiment", "experiments", "name")],
    )
    db.table("runs").create_index(["id"], unique=True)
    db.table("runs").create_index(["experiment", "number"], unique=True)
    db.table("runs").create_index(["status"])
    db.table("run_events").create(
        {"id": int, "run_id": str, "status": str, "at": float, "detail": str},
        pk="id",
        not_null={"run_id", "status", "at"},
    )
    db.table("run_events").create_index(["run_id"])


@MIGRATIONS(name="0002_snapshots_metrics_tags")
def snapshots_metrics_tags(db: sqlite_utils.Database) -> None:
    db.table("snapshots").create(
        {
            "sha256": str,
            "size": int,
            "file_count": int,
            "expanded_bytes": int,
            "files": str,
            "created_at": float,
        },
        pk="sha256",
    )
    db.table("metrics").create(
        {
            "id": int,
            "run_id": str,
            "name": str,
            "kind": str,
            "step": int,
            "value": str,
            "description": str,
            "at": float,
        },
        pk="id",
        not_null={"run_id", "name", "kind", "value"},
    )
    db.table("metrics").create_index(["run_id", "name"])
    db.table("runs").add_column("tags", str, not_null_default="{}")
    db.table("runs").add_column("context_lines", int, not_null_default=0)
    db.table("runs").add_column("snapshot_uploaded", int, not_null_default=1)


@MIGRATIONS(name="0003_environments")
def environments(db: sqlite_utils.Database) -> None:
    db.table("runs").add_column("image", str)
    db.table("runs").add_column("pid", int)
    db.table("env_images").create(
        {
            "image": str,
            "env_key": str,
            "base_image": str,
            "node": str,
            "environment": str,
            "created_at": float,
            "last_used_at": float,
            "build_seconds": float,
        },
        pk="image",
    )
    db.table("environment_definitions").create(
        {"name": str, "version": int, "definition": str, "created_at": float},
        pk=("name", "version"),
    )


@MIGRATIONS(name="0004_nodes_and_scheduling")
def nodes_and_scheduling(db: sqlite_utils.Database) -> None:
    db.table("nodes").create(
        {
            "name": str,
            "host": str,
            "port": int,
            "user": str,
            "key_path": str,
            "docker_socket": str,
            "host_key": str,
            "state": str,
            "enabled": int,
            "draining": int,
            "inventory": str,
            "error": str,
            "created_at": float,
            "last_seen_at": float,
        },
        pk="name",
    )
    db.table("targets").create({"name": str, "nodes": str, "created_at": float}, pk="name")
    db.table("allocations").create(
        {"run_id": str, "node": str, "gpus": str, "slots": int, "created_at": float},
        pk=("run_id", "node"),
    )
    db.table("runs").add_column("priority", int, not_null_default=0)
    db.table("runs").add_column("wait_reason", str)
    db.table("runs").add_column("max_retries", int, not_null_default=0)
    db.table("runs").add_column("retries", int, not_null_default=0)


@MIGRATIONS(name="0005_accounts")
def accounts(db: sqlite_utils.Database) -> None:
    """Users with roles; every token and every run belongs to one. The tokens that existed before
    (the first-start admin token) belong to the user ``admin``, and so do the runs."""
    now = time.time()
    db.table("users").create(
        {
            "id": int,
            "name": str,
            "password_hash": str,
            "role": str,
            "disabled": int,
            "created_at": float,
            "last_login_at": float,
        },
        pk="id",
        not_null={"name", "role", "disabled", "created_at"},
        defaults={"disabled": 0},
    )
    db.table("users").create_index(["name"], unique=True)
    admin_id = (
        db.table("users")
        .insert(
            {
                "name": "admin",
                "password_hash": None,
                "role": "admin",
                "disabled": 0,
                "created_at": now,
            }
        )
        .last_pk
    )
    db.table("tokens").add_column("user_id", int)
    db.table("tokens").add_column("last_used_at", float)
    db.table("tokens").add_column("revoked_at", float)
    db.execute("update tokens set user_id = ?", [admin_id])
    db.table("tokens").create_index(["user_id"])
    db.table("runs").add_column("user", str)
    db.execute("update runs set user = 'admin'")
    # The runs table is paged newest first (by seq) under each filter: one index per filter.
    db.table("runs").create_index(["experiment", "seq"])
    db.table("runs").create_index(["status", "seq"])
    db.table("runs").create_index(["user", "seq"])
    db.table("meta").insert({"key": "session_secret", "value": secrets.token_hex(32)})


@MIGRATIONS(name="0006_gpu_samples")
def gpu_samples(db: sqlite_utils.Database) -> None:
    # GPU telemetry per run (trainhub/store/telemetry.py). Without rowid: the primary key is the
    # table, so one run's samples lie together and are read as one range of it.
    db.execute(
        "create table gpu_samples ("
        " run_id text not null, node text not null, gpu integer not null, step integer not null,"
        " at real not null, utilization real, memory_used real,"
        " primary key (run_id, node, gpu, step)"
        ") without rowid"
    )


@MIGRATIONS(name="0007_run_tags")
def run_tags(db: sqlite_utils.Database) -> None:
    """Tags in a table of their own, kept by triggers, so filtering runs by a tag reads an index
    instead of every run's JSON (a rare tag at 100,000 runs: about 195 ms before, 1 ms after)."""
    db.execute("create table run_tags (key text not null, value text, seq integer not null)")
    db.execute("create index idx_run_tags_key_value_seq on run_tags (key, value, seq)")
    db.execute("create index idx_run_tags_key_seq on run_tags (key, seq)")
    db.execute("create index idx_run_tags_seq on run_tags (seq)")
    db.execute("insert into run_tags select j.key, j.value, r.seq from runs r, json_each(r.tags) j")
    db.execute(
        "create trigger run_tags_insert after insert on runs begin "
        "insert into run_tags select key, value, new.seq from json_each(new.tags); end"
    )
    db.execute(
        "create trigger run_tags_update after update of tags on runs begin "
        "delete from run_tags where seq = new.seq; "
        "insert into run_tags select key, value, new.seq from json_each(new.tags); end"
    )
    db.execute(
        "create trigger run_tags_delete after delete on runs begin "
        "delete from run_tags where seq = old.seq; end"
    )


@MIGRATIONS(name="0008_password_changed")
def password_changed(db: sqlite_utils.Database) -> None:
    """When a password was last set: login sessions from before it end."""
    db.table("users").add_column("password_changed_at", float)


@MIGRATIONS(name="0009_experiment_counts")
def experiment_counts(db: sqlite_utils.Database) -> None:
    """Runs per experiment and status, kept by triggers on ``runs`` in the same transaction (so no
    code path that moves a run can forget it): the experiments list reads a few rows per
    experiment instead of counting every run (about 700 ms at 100,000 runs before, 8 ms after)."""
    db.execute(
        "create table experiment_counts (experiment text not null, status text not null,"
        " n integer not null, primary key (experiment, status)) without rowid"
    )
    db.execute(
        "insert into experiment_counts (experiment, status, n)"
        " select experiment, status, count(*) from runs group by experiment, status"
    )
    add_one = (
        "insert into experiment_counts (experiment, status, n) values (new.experiment, new.status, 1)"
        " on conflict (experiment, status) do update set n = n + 1;"
    )
    take_one = (
        "update experiment_counts set n = n - 1"
        " where experiment = old.experiment and status = old.status;"
    )
    db.execute(f"create trigger runs_counted_insert after insert on runs begin {add_one} end")
    db.execute(
        "create trigger runs_counted_status after update of status on runs"
        f" when old.status is not new.status begin {take_one} {add_one} end"
    )
    db.execute(f"create trigger runs_counted_delete after delete on runs begin {take_one} end")


_NUMBER = (
    "case when {p}kind = 'scalar' and json_type({p}value) in ('integer', 'real') "
    "then cast({p}value as real) end"
)


@MIGRATIONS(name="0010_metric_summary")
def metric_summary(db: sqlite_utils.Database) -> None:
    """Per run and metric: how many points, the last numeric one, its lowest and highest value,
    kept by a trigger. The runs table's metric columns and picker read one row per run and metric
    instead of every point (at 100,000 runs and 1,000,000 points: ~176 ms -> 0.2 ms a column)."""
    number, new_number = _NUMBER.format(p=""), _NUMBER.format(p="new.")
    db.execute(
        "create table metric_summary (run_id text not null, name text not null, kind text not null,"
        " n integer not null, last_id integer, min real, max real, primary key (run_id, name))"
        " without rowid"
    )
    db.execute(
        "insert into metric_summary (run_id, name, kind, n, last_id, min, max)"
        f" select run_id, name, kind, count(*), max(case when {number} is not null then id end),"
        f" min({number}), max({number}) from metrics group by run_id, name"
    )
    db.execute(
        "create trigger metrics_summarized after insert on metrics begin"
        " insert into metric_summary (run_id, name, kind, n, last_id, min, max) values"
        f" (new.run_id, new.name, new.kind, 1, case when {new_number} is not null then new.id end,"
        f" {new_number}, {new_number})"
        " on conflict (run_id, name) do update set kind = excluded.kind, n = n + 1,"
        " last_id = coalesce(excluded.last_id, last_id),"
        " min = coalesce(min(min, excluded.min), min, excluded.min),"
        " max = coalesce(max(max, excluded.max), max, excluded.max); end"
    )


@MIGRATIONS(name="0011_datastores")
def datastores(db: sqlite_utils.Database) -> None:
    """Datastores (named places for training data) and what each node holds of them. Every
    workspace has ``workspaceblobstore``, a folder on the server, as Azure ML's default one."""
    db.table("datastores").create(
        {
            "name": str,
            "kind": str,  # server | shared
            "paths": str,  # JSON: for shared, {"*": "/mnt/nfs/x", "<node>": "/other/path"}
            "read_only": int,
            "description": str,
            "created_by": str,
            "created_at": float,
        },
        pk="name",
        not_null={"name", "kind", "paths", "read_only", "created_at"},
        defaults={"paths": "{}", "read_only": 0},
    )
    db.table("datastores").insert(
        {
            "name": "workspaceblobstore",
            "kind": "server",
            "paths": "{}",
            "read_only": 0,
            "description": "the workspace's default datastore (a folder on the server)",
            "created_by": "admin",
            "created_at": time.time(),
        }
    )
    # A node's cached copy of one datastore folder, by the content key of what was copied.
    db.table("datastore_copies").create(
        {
            "node": str,
            "key": str,
            "datastore": str,
            "path": str,
            "volume": str,
            "bytes": int,
            "files": int,
            "created_at": float,
            "last_used_at": float,
        },
        pk=("node", "key"),
        not_null={"node", "key", "datastore", "volume", "created_at"},
    )


@MIGRATIONS(name="0012_models")
def models(db: sqlite_utils.Database) -> None:
    """Registered models (Azure ML's ``Model``): versions of a name, their files under the data
    folder, and where they came from (a run, or a client's upload when ``run_id`` is null)."""
    db.table("models").create(
        {
            "seq": int,
            "name": str,
            "version": int,
            "path": str,  # what was registered: 'outputs/model.pkl', or the client's file name
            "entry": str,  # the file or folder name under the version's folder
            "is_folder": int,
            "size_bytes": int,
            "files": int,
            "sha256": str,
            "tags": str,  # JSON object of strings
            "properties": str,  # JSON object of strings
            "description": str,
            "run_id": str,
            "experiment": str,
            "created_by": str,
            "created_at": float,
        },
        pk="seq",
        not_null={
            "name",
            "version",
            "path",
            "entry",
            "is_folder",
            "size_bytes",
            "files",
            "sha256",
            "tags",
            "properties",
            "created_at",
        },
        defaults={"tags": "{}", "properties": "{}"},
    )
    db.execute("create unique index models_name_version on models (name, version)")
    db.execute("create index models_run on models (run_id)")


@MIGRATIONS(name="0013_datasets")
def datasets(db: sqlite_utils.Database) -> None:
    """Datasets (Azure ML's ``Dataset.File`` / ``Dataset.Tabular``): versioned records over paths
    of one datastore. A dataset a run used without registering it is kept too (``name`` null,
    Azure ML's "saved" dataset), so that every run's data has a record. ``dataset_runs`` says
    which runs read (``input``) or wrote (``output``) which dataset."""
    db.table("datasets").create(
        {
            "id": str,
            "seq": int,
            "name": str,
            "version": int,
            "kind": str,  # 'file' | 'tabular'
            "datastore": str,
            "paths": str,  # JSON list of the paths (globs) inside the datastore, as given
            "options": str,  # JSON object: a tabular dataset's reading options
            "definition": str,  # sha256 of kind, datastore, paths, options (equal data, one id)
            "description": str,
            "tags": str,  # JSON object of strings
            "created_by": str,
            "created_at": float,
        },
        pk="id",
        not_null={"id", "seq", "kind", "datastore", "paths", "options", "definition"},
        defaults={"options": "{}", "tags": "{}"},
    )
    db.execute("create unique index datasets_name_version on datasets (name, version)")
    db.execute("create index datasets_definition on datasets (definition)")
    db.table("dataset_runs").create(
        {
            "run_id": str,
            "reference": str,  # the input's or output's name in the run
            "dataset_id": str,
            "direction": str,  # 'input' | 'output'
            "mode": str,
            "created_at": float,
        },
        pk=("run_id", "reference"),
        not_null={"run_id", "reference", "dataset_id", "direction", "created_at"},
    )
    db.execute("create index dataset_runs_dataset on dataset_runs (dataset_id)")


@MIGRATIONS(name="0014_run_kinds")
def run_kinds(db: sqlite_utils.Database) -> None:
    """Runs that are not scripts (``experiment.start_logging()``: ``kind`` 'interactive', logged
    to straight from a client, ``last_seen_at`` its last call), parent and child runs, and Azure
    ML's display name, description and set-once properties."""
    runs = db.table("runs")
    runs.add_column("kind", str, not_null_default="script")
    runs.add_column("parent_id", str)
    runs.add_column("display_name", str)
    runs.add_column("description", str)
    runs.add_column("properties", str, not_null_default="{}")
    runs.add_column("last_seen_at", float)
    db.execute("create index idx_runs_parent on runs (parent_id, seq)")


@MIGRATIONS(name="0015_run_queries")
def run_queries(db: sqlite_utils.Database) -> None:
    """Run properties in a table of their own, kept by triggers as tags are (0007), and runs by
    kind: filtering 100,000 runs by a rare property or kind reads an index, not every run (a page
    of runs with a rare property: about 77 ms before, 5 ms after; bench/run_queries.py)."""
    db.execute("create table run_properties (key text not null, value text, seq integer not null)")
    db.execute("create index idx_run_properties_key_value_seq on run_properties (key, value, seq)")
    db.execute("create index idx_run_properties_key_seq on run_properties (key, seq)")
    db.execute("create index idx_run_properties_seq on run_properties (seq)")
    db.execute(
        "insert into run_properties select j.key, j.value, r.seq "
        "from runs r, json_each(r.properties) j"
    )
    db.execute(
        "create trigger run_properties_insert after insert on runs begin "
        "insert into run_properties select key, value, new.seq from json_each(new.properties); end"
    )
    db.execute(
        "create trigger run_properties_update after update of properties on runs begin "
        "delete from run_properties where seq = new.seq; "
        "insert into run_properties select key, value, new.seq from json_each(new.properties); end"
    )
    db.execute(
        "create trigger run_properties_delete after delete on runs begin "
        "delete from run_properties where seq = old.seq; end"
    )
    db.execute("create index idx_runs_kind_seq on runs (kind, seq)")


@MIGRATIONS(name="0016_sweeps")
def sweeps(db: sqlite_utils.Database) -> None:
    """Hyperparameter sweeps (HyperDrive): one row per sweep, keyed by its parent run's id, with
    the whole checked spec, the limits that can change while it runs and where it stands; one row
    per child with the values it was given, written in the same transaction as the child's run
    (so a restart neither loses nor repeats a child)."""
    db.table("sweeps").create(
        {
            "id": str,  # the parent run's id, HD_<hex>
            "spec": str,  # SweepSpec.to_builtins(): the run config resolved, the seed drawn
            "state": str,  # 'running' | 'ending' | 'canceling' | 'done'
            "max_total_runs": int,
            "max_concurrent_runs": int,  # the concurrency in force (SweepSpec.concurrency)
            "next_index": int,  # the index the next child gets
            "end_reason": str,  # why no more children were started
            "created_at": float,
        },
        pk="id",
        not_null={"id", "spec", "state", "max_total_runs", "max_concurrent_runs", "next_index"},
        defaults={"next_index": 0},
    )
    db.execute("create index idx_sweeps_state on sweeps (state)")
    db.table("sweep_children").create(
        {
            "sweep_id": str,
            "idx": int,
            "run_id": str,
            "hyperparameters": str,  # JSON object: name (as in the parameter space) -> value
            "stop": str,  # JSON: the policy's Stop (or the sweep's own end) that canceled it
            "created_at": float,
        },
        pk=("sweep_id", "idx"),
        not_null={"sweep_id", "idx", "run_id", "hyperparameters", "created_at"},
    )
    db.execute("create unique index idx_sweep_children_run on sweep_children (run_id)")


@MIGRATIONS(name="0017_gc_disk_use")
def gc_disk_use(db: sqlite_utils.Database) -> None:
    """What each run keeps on disk, and retention. ``stored_bytes`` is the size of the run's
    folder (outputs and logs), written once its history is final, so that disk use per
    experiment or user is a GROUP BY, never a walk of the disk; ``outputs_removed_at`` is when
    retention removed its outputs (the logs stay). The partial indexes hold only the runs a
    pass still has work for: ended runs not yet measured, ended runs whose outputs are still
    there; a pass reads those, not every run."""
    runs = db.table("runs")
    runs.add_column("stored_bytes", int)
    runs.add_column("outputs_removed_at", float)
    db.execute(
        "create index idx_runs_unmeasured on runs (ended_at) "
        "where stored_bytes is null and ended_at is not null"
    )
    db.execute(
        "create index idx_runs_retention on runs (ended_at) "
        "where outputs_removed_at is null and ended_at is not null"
    )
    db.execute("create index idx_runs_snapshot on runs (snapshot, outputs_removed_at)")
    db.execute("create index idx_runs_user_bytes on runs (user, stored_bytes)")
    db.execute("create index idx_runs_experiment_bytes on runs (experiment, stored_bytes)")


@MIGRATIONS(name="0018_slurm_targets")
def slurm_targets(db: sqlite_utils.Database) -> None:
    """Slurm clusters as compute targets (reached through a login node over SSH, host key pinned),
    and the batch job of each run sent to one: the job id is what a restarted server re-attaches
    by."""
    db.table("slurm_targets").create(
        {
            "name": str,
            "host": str,
            "port": int,
            "user": str,
            "key_path": str,
            "host_key": str,  # the login node's public key, pinned at registration
            "partition": str,
            "account": str,
            "qos": str,
            "work_dir": str,  # on the cluster's shared storage: runs/<id>/ and envs/<key>/
            "created_at": float,
        },
        pk="name",
        not_null={"name", "host", "port", "user", "key_path", "host_key", "partition", "work_dir"},
    )
    db.table("slurm_jobs").create(
        {"run_id": str, "target": str, "job_id": str, "submitted_at": float},
        pk="run_id",
        not_null={"run_id", "target", "job_id", "submitted_at"},
    )
