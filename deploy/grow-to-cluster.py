#!/usr/bin/env python3
"""Move vibehq's streams from a single nats-server (the `vibehq up` embedded default) into a
JetStream cluster as R3 streams, keeping every sequence number.

A standalone server's streams are not adopted when its store is restarted as a cluster node (they
are orphaned), so the streams are copied instead:

  1. the old store is served by nats-server with a JetStream domain and a leaf-node listener
     (deploy/nats/grow-old.conf), and every cluster node links to it (deploy/nats/grow-leaf.conf);
  2. this script creates each stream on the cluster as an R3 mirror of the old one, read across
     the link through the old domain's API ($JS.<domain>.API), and waits until each mirror has the
     old stream's last sequence and message count;
  3. the old server is stopped (by you, or by this script with --old-pid);
  4. each mirror is promoted to an ordinary stream: its mirror removed and the old stream's
     subjects (and the settings a mirror may not have) put back (nats-server 2.12+).

A mirror keeps the source's sequence numbers, so vibehq's projection files (their checkpoints are
stream sequences) stay valid: `vibehq up` on the same data folder resumes where it was.
Consumers are not stream data: after this, `vibehq lanes restore` creates the task lanes again.
Steps and checks: deploy/README.md "Growing from one server to the cluster".

  pip install 'nats-py[nkeys]'
  deploy/grow-to-cluster.py --old nats://127.0.0.1:4390 \\
      --cluster nats://127.0.0.1:4301,nats://127.0.0.1:4302,nats://127.0.0.1:4303 \\
      --nkey /tmp/vibehq-cluster/auth/service.nk --domain solo

Run it again after an interruption: a stream that is already a mirror of the old one is reused,
one already promoted (same subjects, same last sequence) is left alone.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import urllib.parse

try:
    import nats
except ImportError:
    sys.exit("grow-to-cluster: needs nats-py: pip install 'nats-py[nkeys]'")

# The schedules stream first: VIBEHQ_TASKS sources it once promoted.
STREAMS = ["VIBEHQ_SCHEDULES", "VIBEHQ_TASKS", "VIBEHQ_CONTAINERS", "VIBEHQ_AI"]

# Settings of the old stream that a mirror may not have (or that only matter once it takes
# writes): left out when the mirror is created, put back when it is promoted. (A mirror's
# duplicate_window is 0: it takes no publishes to deduplicate.)
WRITE_ONLY = ["subjects", "duplicate_window", "allow_atomic", "allow_msg_ttl",
              "allow_rollup_hdrs", "deny_delete", "deny_purge", "discard_new_per_subject",
              "sealed", "subject_transform", "republish", "mirror", "sources",
              # A mirror must not fire the schedules it copies; the promoted stream does.
              "allow_msg_schedules"]


class ApiError(Exception):
    def __init__(self, error):
        super().__init__(f"{error.get('description')} (code {error.get('code')}, "
                         f"err_code {error.get('err_code')})")
        self.err_code = error.get("err_code")


STREAM_NOT_FOUND = 10059


async def jsapi(nc, subject, body=None, api="$JS.API"):
    """One JetStream API request, as raw JSON, so every stream setting the server has is kept
    (a client library's model may not know the newest ones)."""
    payload = json.dumps(body).encode() if body is not None else b""
    reply = json.loads((await nc.request(f"{api}.{subject}", payload, timeout=10)).data)
    if "error" in reply:
        raise ApiError(reply["error"])
    return reply


async def stream_info(nc, name):
    """The stream's info, or None if there is no such stream."""
    try:
        return await jsapi(nc, f"STREAM.INFO.{name}")
    except ApiError as e:
        if e.err_code == STREAM_NOT_FOUND:
            return None
        raise


def say(*args):
    print(*args, flush=True)


def die(message):
    sys.exit(f"grow-to-cluster: {message}")


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Steps and checks: deploy/README.md, section 'Growing from one server to the cluster'.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", default="nats://127.0.0.1:4390", metavar="URL",
                   help="the old server, served with grow-old.conf: where the stream configs and "
                        "sequences are read (default: %(default)s)")
    p.add_argument("--old-user", help="user on the old server (grow-old.conf has none)")
    p.add_argument("--old-password", help="its password")
    p.add_argument("--cluster", required=True, metavar="URLS",
                   help="the cluster's nodes, comma-separated")
    auth = p.add_argument_group("cluster credentials (the service's: it creates streams)")
    auth.add_argument("--nkey", metavar="FILE",
                      help="an nkey seed file, e.g. the service.nk `vibehq nats-auth` wrote")
    auth.add_argument("--creds", metavar="FILE", help="a .creds file")
    auth.add_argument("--user", help="user name (with --password)")
    auth.add_argument("--password", help="password (or set GROW_PASSWORD)")
    auth.add_argument("--tls-ca", metavar="FILE", help="CA certificate for the cluster's TLS")
    p.add_argument("--domain", default="solo",
                   help="the old server's JetStream domain (grow-old.conf; default: %(default)s)")
    p.add_argument("--replicas", type=int, default=3, help="copies of each stream (default: 3)")
    p.add_argument("--stream", action="append", dest="streams", metavar="NAME",
                   help=f"a stream to move (repeatable; default: {', '.join(STREAMS)})")
    p.add_argument("--quiet-secs", type=float, default=3.0,
                   help="how long the old streams must stay unchanged before the old server may "
                        "be stopped (default: %(default)s)")
    p.add_argument("--old-pid", type=int, metavar="PID",
                   help="the old nats-server's pid: stop it with SIGTERM once the mirrors are "
                        "caught up (otherwise you are asked to, and the script waits until it is gone)")
    p.add_argument("--no-promote", action="store_true",
                   help="only create the mirrors and wait until they are caught up")
    return p.parse_args()


async def quiet(_error):
    """nats-py's default error callback prints a traceback; the failures here are reported."""


async def connect(servers, name, **options):
    # wait_for: nats-py (2.16) may keep trying a refused connection despite allow_reconnect=False.
    try:
        return await asyncio.wait_for(
            nats.connect(servers=servers, name=name, connect_timeout=5, allow_reconnect=False,
                         max_reconnect_attempts=0, error_cb=quiet, **options),
            timeout=15)
    except Exception as e:  # noqa: BLE001 - every connect failure ends here
        die(f"cannot connect to {', '.join(servers)}: {type(e).__name__}: {e or 'timed out'}")


def cluster_options(args):
    options = {}
    given = [k for k in ("nkey", "creds", "user") if getattr(args, k)]
    if len(given) > 1:
        die("give one kind of cluster credentials: --nkey, --creds or --user/--password")
    if args.nkey:
        options["nkeys_seed"] = args.nkey
    elif args.creds:
        options["user_credentials"] = args.creds
    elif args.user:
        password = args.password or os.environ.get("GROW_PASSWORD")
        if not password:
            die("--user needs --password (or GROW_PASSWORD)")
        options.update(user=args.user, password=password)
    if args.tls_ca:
        import ssl
        options["tls"] = ssl.create_default_context(cafile=args.tls_ca)
    return options


def progress(name, have, want):
    if want["last_seq"] == 0:
        return f"{name} empty"
    percent = 100.0 * have["last_seq"] / want["last_seq"]
    return f"{name} {have['last_seq']}/{want['last_seq']} ({percent:.0f}%, {have['messages']} msgs)"


def same(have, want):
    return have["last_seq"] == want["last_seq"] and have["messages"] == want["messages"]


async def states(nc, streams):
    return {name: (await jsapi(nc, f"STREAM.INFO.{name}"))["state"] for name in streams}


async def old_gone(args):
    """True once the old server takes no connections (and, with --old-pid, has exited)."""
    if args.old_pid:
        try:
            os.kill(args.old_pid, 0)
            return False
        except ProcessLookupError:
            pass
        except PermissionError:
            return False
    # A plain TCP connection: does anything still listen on the old server's client port?
    url = urllib.parse.urlsplit(args.old if "://" in args.old else f"nats://{args.old}")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(url.hostname or "127.0.0.1", url.port or 4222), timeout=2)
    except (OSError, asyncio.TimeoutError):
        return True
    writer.close()
    return False


async def main():
    args = parse_args()
    streams = args.streams or STREAMS
    api = f"$JS.{args.domain}.API"

    # 1. The old streams, as the old server has them.
    old_nc = await connect([args.old], "vibehq grow (old)", user=args.old_user,
                           password=args.old_password)
    old = {}
    for name in streams:
        info = await stream_info(old_nc, name)
        if info is None:
            die(f"the old server at {args.old} has no stream {name}")
        old[name] = info
        c, st = info["config"], info["state"]
        say(f"old   {name}: subjects {c.get('subjects')}, {st['messages']} messages, "
            f"sequences {st['first_seq']}..{st['last_seq']}, replicas {c.get('num_replicas')}")

    # 2. The cluster, and the old domain's API as the cluster sees it (the leaf link).
    nc = await connect(args.cluster.split(","), "vibehq grow (cluster)", **cluster_options(args))
    try:
        await jsapi(nc, "INFO", api=api)
    except Exception as e:  # noqa: BLE001
        die(f"the cluster does not reach JetStream domain {args.domain!r} ({api}.INFO: "
            f"{type(e).__name__} {e}). Is every node linked to the old server (include "
            f"./grow-leaf.conf, see deploy/nats/grow-leaf.conf) and the old server served with "
            f"domain {args.domain!r} (deploy/nats/grow-old.conf)?")
    say(f"cluster reaches the old server's JetStream as {api}")

    # 3. One R3 mirror per stream (or the one a previous run created).
    promoted = set()
    for name in streams:
        have = await stream_info(nc, name)
        want_config = old[name]["config"]
        if have is None:
            config = {k: v for k, v in want_config.items() if k not in WRITE_ONLY}
            config.pop("metadata", None)  # the server's own (_nats.*) keys
            config["num_replicas"] = args.replicas
            config["mirror"] = {"name": name, "external": {"api": api}}
            try:
                await jsapi(nc, f"STREAM.CREATE.{name}", config)
            except Exception as e:  # noqa: BLE001
                die(f"cannot create the mirror {name} on the cluster: {e}")
            say(f"mirror {name}: created, R{args.replicas}, from {api}")
            continue
        mirror = have["config"].get("mirror")
        if mirror and mirror.get("name") == name:
            if (mirror.get("external") or {}).get("api") != api:
                die(f"{name} on the cluster mirrors another source ({mirror}); delete it or "
                    "pick the right --domain")
            say(f"mirror {name}: exists (from an earlier run), reused")
        elif (not mirror and have["config"].get("subjects") == want_config.get("subjects")
              and have["state"]["last_seq"] == old[name]["state"]["last_seq"]):
            say(f"stream {name}: already promoted on the cluster (last sequence "
                f"{have['state']['last_seq']}), left alone")
            promoted.add(name)
        else:
            die(f"{name} already exists on the cluster and is not a mirror of the old one "
                f"(last sequence {have['state']['last_seq']}, old "
                f"{old[name]['state']['last_seq']}, subjects {have['config'].get('subjects')}). "
                "Was `vibehq up` started on the cluster already? Delete that stream only if it "
                "holds nothing you need (nats stream rm), then run this again.")

    # 4. Wait until every mirror has what the old stream has, and the old streams stay put.
    say("waiting for the mirrors to catch up (stop every vibehq up and worker still writing "
        "to the old server)…")
    want = await states(old_nc, streams)
    first = dict(want)
    still_since = time.monotonic()
    last_line = ""
    have_before, have_since = None, time.monotonic()
    while True:
        now = await states(old_nc, streams)
        if any(not same(now[n], want[n]) for n in streams):
            still_since = time.monotonic()
            for n in streams:
                if not same(now[n], want[n]):
                    say(f"warning: the old {n} is still being written "
                        f"({first[n]['last_seq']} -> {now[n]['last_seq']}): stop what writes there")
            want = now
        have = await states(nc, streams)
        line = "  " + "; ".join(progress(n, have[n], want[n]) for n in streams)
        if line != last_line:
            say(line)
            last_line = line
        settled = time.monotonic() - still_since >= args.quiet_secs
        if all(same(have[n], want[n]) for n in streams) and settled:
            break
        # A mirror that has every message but stops short of the old last sequence: the old
        # stream's last messages were deleted, and a mirror cannot copy a deletion at the end.
        # Promoted, the stream would hand out those sequences again, and a projection that had
        # read them would skip the new events: refuse rather than wait forever.
        if have != have_before:
            have_before, have_since = have, time.monotonic()
        elif settled and time.monotonic() - have_since >= max(10.0, 3 * args.quiet_secs):
            short = [n for n in streams if have[n]["messages"] == want[n]["messages"]
                     and have[n]["last_seq"] < want[n]["last_seq"]]
            if short:
                die("the old " + ", ".join(f"{n}'s last sequences "
                                           f"{have[n]['last_seq'] + 1}..{want[n]['last_seq']}"
                                           for n in short)
                    + " were deleted; a mirror cannot reproduce a deletion at a stream's end, "
                    "so the promoted stream would reuse those sequences. vibehq never deletes "
                    "events: find out what did. The mirrors stay; nothing was promoted.")
        await asyncio.sleep(1)
    say("all mirrors caught up: " + ", ".join(f"{n} at {want[n]['last_seq']}" for n in streams))
    await old_nc.close()
    if args.no_promote:
        say("--no-promote: stopping here; run again without it to promote")
        await nc.close()
        return

    # 5. The old server goes away, so nothing can be written there any more.
    if args.old_pid:
        say(f"stopping the old server (SIGTERM to pid {args.old_pid})")
        try:
            os.kill(args.old_pid, signal.SIGTERM)
        except ProcessLookupError:
            say(f"pid {args.old_pid} is not running")
    else:
        say(f"stop the old server now (the nats-server serving grow-old.conf, {args.old}); "
            "waiting until it is gone…")
    while not await old_gone(args):
        await asyncio.sleep(1)
    say("the old server is gone")
    for name in streams:
        state = (await jsapi(nc, f"STREAM.INFO.{name}"))["state"]
        if not same(state, want[name]):
            die(f"{name} on the cluster is at {state['last_seq']} ({state['messages']} msgs) but "
                f"the old one was at {want[name]['last_seq']} ({want[name]['messages']}): "
                "something wrote to the old server at the end. Serve the old store again "
                "(grow-old.conf) and run this again: the mirrors catch up.")

    # 6. Promote: remove the mirror, put the subjects and the write settings back.
    for name in streams:
        if name in promoted:
            continue
        config = (await jsapi(nc, f"STREAM.INFO.{name}"))["config"]
        config.pop("mirror", None)
        for key in WRITE_ONLY:
            if key in old[name]["config"] and key not in ("mirror", "sources"):
                config[key] = old[name]["config"][key]
        try:
            await jsapi(nc, f"STREAM.UPDATE.{name}", config)
        except Exception as e:  # noqa: BLE001
            die(f"cannot promote {name}: {e} (removing a mirror needs nats-server 2.12 or newer)")
        after = await jsapi(nc, f"STREAM.INFO.{name}")
        c, st = after["config"], after["state"]
        if c.get("mirror") or st["last_seq"] != want[name]["last_seq"]:
            die(f"{name} did not promote cleanly: mirror {c.get('mirror')}, last sequence "
                f"{st['last_seq']} (want {want[name]['last_seq']})")
        say(f"stream {name}: promoted: subjects {c.get('subjects')}, R{c.get('num_replicas')}, "
            f"{st['messages']} messages, sequences {st['first_seq']}..{st['last_seq']}")
    await nc.close()

    say(f"""
done: the cluster holds {', '.join(streams)} with the old sequence numbers.
next (deploy/README.md "Growing from one server to the cluster"):
  1. drop the leaf link: comment out `include ./grow-leaf.conf` on every node and reload it
     (systemctl reload nats-server; locally: deploy/local-cluster.sh reload without GROW_LEAF);
     nothing may connect the cluster to the old store again
  2. move the old store aside so no `vibehq up` without --nats-url restarts it:
     mv <data_dir>/nats <data_dir>/nats.moved-to-cluster
  3. vibehq lanes restore --nats-url {args.cluster} --nats-nkey <service.nk>
  4. vibehq up --nats-url {args.cluster} --nats-nkey <service.nk> --stream-replicas {args.replicas} --data-dir <the same data_dir>
  5. vibehq replay --verify --nats-url {args.cluster} --nats-nkey <service.nk> --data-dir <the same data_dir>
  6. workers: point them at the cluster, each with its own key""")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit("grow-to-cluster: interrupted; run it again to go on (mirrors are reused)")
