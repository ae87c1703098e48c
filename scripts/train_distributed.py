"""Data-parallel training that runs unchanged on one CPU, N forced host devices, one or
more GPUs, and several hosts.

    python scripts/train_distributed.py                         # every local device
    python scripts/train_distributed.py --host-devices 4        # 4 simulated CPU devices
    # several hosts (run on each; process 0's address is the coordinator):
    python scripts/train_distributed.py --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
    python scripts/train_distributed.py --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 1

Every process builds the same data (same seed) and the same initial parameters; the mesh
spans all devices of all processes (axis "data"), each global minibatch is split across
them, and XLA all-reduces the gradients. Only process 0 writes checkpoints (`jm.fit`
does this by itself), so give every process the same `--checkpoint-dir` on a shared file
system: a restarted job resumes from it on all hosts.
"""
import argparse
import os
import sys
import time


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host-devices", type=int, default=0,
                   help="simulate this many CPU devices (sets XLA_FLAGS before JAX starts)")
    p.add_argument("--coordinator", help="host:port of process 0, for multi-host runs")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256, help="global batch size")
    p.add_argument("--rows", type=int, default=16384)
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.host_devices:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.host_devices}")
    import jax
    import numpy as np
    if args.coordinator:
        jax.distributed.initialize(coordinator_address=args.coordinator,
                                   num_processes=args.num_processes, process_id=args.process_id)
    import jaxmlp as jm

    mesh = jm.parallel.data_mesh()  # all devices of all processes
    n_dev = mesh.shape["data"]
    batch = max(n_dev, args.batch_size // n_dev * n_dev)  # a multiple of the device count
    rng = np.random.default_rng(args.seed)  # same data on every process
    x = rng.standard_normal((args.rows, 64)).astype(np.float32)
    w = rng.standard_normal((64, 10)).astype(np.float32)
    y = np.argmax(x @ w + 0.5 * rng.standard_normal((args.rows, 10)), axis=1)
    model = jm.MLP((64, 256, 256, 10), activation="relu", output="softmax", loss="cce")
    params = jm.init_params(jax.random.key(args.seed), model)
    if jax.process_index() == 0:
        print(f"{jax.process_count()} process(es), {n_dev} device(s) "
              f"({jax.devices()[0].platform}), global batch {batch} "
              f"({batch // n_dev} per device)")
    t0 = time.perf_counter()
    params, history = jm.fit(model, params, jm.optim.adam(1e-3), x, y, epochs=args.epochs,
                             batch_size=batch, key=jax.random.key(args.seed + 1), mesh=mesh,
                             checkpoint_dir=args.checkpoint_dir)
    elapsed = time.perf_counter() - t0
    if jax.process_index() == 0:
        for e, loss in enumerate(history["train_loss"]):
            print(f"epoch {e + 1}: train loss {loss:.4f}  ({history['epoch_time'][e]:.2f} s)")
        steady = history["epoch_time"][1:] or history["epoch_time"]
        rate = (args.rows // batch) * batch / (sum(steady) / len(steady))
        print(f"done in {elapsed:.1f} s; {rate:,.0f} samples/s after the first epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
