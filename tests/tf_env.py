"""A stand-in for a TensorFlow parameter-server script, in plain Python (no TensorFlow: its wheel is
274 MB), that checks what trainhub gives each process the way TensorFlow would use it.

Every process reads its ``TF_CONFIG``, checks its shape, prints it, and listens on its own address's
port (as ``tf.distribute.Server`` does: a port two processes of a node shared would fail here). A
parameter server answers every connection with its task (``ps 0``) until it is stopped. A worker
connects over TCP to every parameter server's address in its ``TF_CONFIG`` (retrying while they start),
checks each answer, and writes what it saw to ``outputs/worker-<index>.json`` on its node.
``--fail-worker N``: the other workers wait (so only the failure can end the run), and worker N fails
with a message once it reached them all; ``--hold``: every worker waits (a cancel or the time limit ends the run).
Waiting workers say so when SIGTERM reaches them. ``--after-chief``: the other workers reach the
parameter servers only once worker 0 has ended (its node's launcher is done then).
"""

from __future__ import annotations

PS_SCRIPT = """
import argparse, json, os, signal, socket, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("--fail-worker", type=int, default=-1)
parser.add_argument("--hold", action="store_true")
parser.add_argument("--after-chief", action="store_true")
args = parser.parse_args()
config = json.loads(os.environ["TF_CONFIG"])
assert sorted(config) == ["cluster", "environment", "task"], config
assert config["environment"] == "cloud", config
cluster, task = config["cluster"], config["task"]
assert sorted(cluster) == ["ps", "worker"], cluster
kind, index = task["type"], task["index"]
me = cluster[kind][index]
print(f"{kind} {index} at {me} on {os.environ['TRAINHUB_NODE']}: TF_CONFIG {json.dumps(config)}",
      flush=True)
listener = socket.socket()
listener.bind(("0.0.0.0", int(me.rsplit(":", 1)[1])))
waiting = kind == "worker" and index != args.fail_worker and (args.hold or args.fail_worker >= 0)
if waiting:
    def stopped(signum, frame):
        print(f"worker {index} stopped by SIGTERM", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stopped)
    print(f"worker {index} waits", flush=True)
listener.listen()

if kind == "ps":
    while True:  # as server.join(): serves until the launcher stops it
        connection, _ = listener.accept()
        connection.sendall(f"ps {index}\\n".encode())
        connection.close()


def reach(address, answer=True, patience=60):
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + patience
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=5) as connection:
                return connection.makefile().readline().strip() if answer else ""
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


if index == args.fail_worker:  # once the other workers wait (they listen then)
    for number, address in enumerate(cluster["worker"]):
        if number != index:
            reach(address, answer=False)
    sys.exit(f"worker {index} gives up")
if waiting:
    time.sleep(600)

if args.after_chief and index > 0:  # the chief's node is done: its parameter server still serves
    reach(cluster["worker"][0], answer=False)
    while True:
        try:
            reach(cluster["worker"][0], answer=False, patience=0)
            time.sleep(0.1)
        except OSError:
            break
    time.sleep(2)  # time enough for the chief's node to stop what it would stop
    print(f"worker {index}: the chief has ended", flush=True)
answers = {}
for number, address in enumerate(cluster["ps"]):
    answers[address] = reach(address)
    assert answers[address] == f"ps {number}", answers
print(f"worker {index} reached every parameter server: {answers}", flush=True)
os.makedirs("outputs", exist_ok=True)
seen = {"tf_config": config, "answers": answers, "node": os.environ["TRAINHUB_NODE"]}
json.dump(seen, open(f"outputs/worker-{index}.json", "w"))
"""
