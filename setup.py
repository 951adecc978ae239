from setuptools import find_packages, setup

setup(
    name="fairseq-magic",
    version="0.1.0",
    description="MAGIC: weight-sharing NAS for BERT pre-training, as a fairseq plugin",
    packages=find_packages(include=["fairseq_magic", "fairseq_magic.*"]),
    python_requires=">=3.10",
    # fairseq (ve-fairseq==0.12.3) and torch==2.13.0 are installed by the Makefile:
    # fairseq must go in with --no-deps (its metadata pins a torchaudio that
    # would replace torch), which setup.py cannot express.
    install_requires=["sentencepiece", "scipy", "matplotlib"],
    entry_points={
        "console_scripts": [
            "magic-train-cpu-ddp = fairseq_magic.cli.train_cpu_ddp:cli_main",
            "magic-children = fairseq_magic.cli.children:cli_main",
            "magic-search = fairseq_magic.cli.search:cli_main",
            "magic-export = fairseq_magic.cli.export:cli_main",
            "magic-ground-truth = fairseq_magic.cli.ground_truth:cli_main",
            "magic-rank = fairseq_magic.cli.rank:cli_main",
            "magic-interference = fairseq_magic.cli.interference:cli_main",
            "magic-squad-eval = fairseq_magic.cli.squad_eval:cli_main",
            "magic-glue = fairseq_magic.cli.glue:cli_main",
            "magic-pipeline = fairseq_magic.cli.pipeline:cli_main",
            "magic-squad = fairseq_magic.cli.squad:cli_main",
        ]
    },
)
