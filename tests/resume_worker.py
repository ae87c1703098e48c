"""Run by test_resume.py in a subprocess: trains with checkpoints, writes the final params.

    python resume_worker.py OUT.npz [CKPT_DIR] [--slow]

--slow sleeps a little inside every epoch and inside every checkpoint save (after the
temporary file is written, before it is renamed into place), so that a SIGKILL sent at a
random moment often lands mid-training or mid-save.
"""
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxmlp as jm  # noqa: E402


def main(argv):
    out = argv[0]
    ckpt_dir = argv[1] if len(argv) > 1 and not argv[1].startswith("--") else None
    slow = "--slow" in argv
    if slow:  # only this process's jaxmlp.checkpoint: os.replace itself is left alone
        write_zip = jm.checkpoint._write_zip

        def slow_write_zip(*args):
            write_zip(*args)
            time.sleep(0.02)

        jm.checkpoint._write_zip = slow_write_zip
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 4))
    y = (x[:, :1] * x[:, 1:2] + np.sin(x[:, 2:3]))
    xv = rng.standard_normal((32, 4))
    yv = xv[:, :1] * xv[:, 1:2] + np.sin(xv[:, 2:3])
    model = jm.MLP((4, 16, 16, 1), activation="tanh", norm="batch", dropout=0.1, l2=1e-4)
    params = jm.init_params(jax.random.key(0), model, dtype=jnp.float64)
    callback = (lambda e, logs: time.sleep(0.02)) if slow else None
    params, history = jm.fit(model, params, jm.optim.adam(1e-2), x, y, epochs=24,
                             batch_size=16, key=jax.random.key(1), validation=(xv, yv),
                             patience=30, callback=callback, checkpoint_dir=ckpt_dir)
    leaves = jax.tree_util.tree_leaves((params, history["state"]))
    np.savez(out, *[np.asarray(a) for a in leaves],
             train_loss=np.asarray(history["train_loss"]), best=history["best_epoch"])


if __name__ == "__main__":
    main(sys.argv[1:])
