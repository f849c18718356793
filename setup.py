from setuptools import find_packages, setup

setup(
    name="dltutorials-is",
    version="0.1.0",
    description=(
        "Aesara port of the deeplearning.net LSTM (IMDB) and RNN-RBM (Nottingham) "
        "tutorials with Fast Importance Mining importance sampling"
    ),
    packages=find_packages(include=["dltutorials_is", "dltutorials_is.*"]),
    python_requires=">=3.10,<3.12",
    install_requires=[
        "aesara==2.9.4",
        "numpy>=1.24,<2",
        "scipy>=1.10,<=1.12",
        "joblib>=1.3",
        "sacremoses>=0.1",
        "mido>=1.3",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dask": ["dask[distributed]"],
        "test": ["pytest>=7"],
        # Optional faster BLAS for Aesara (dltutorials_is/backend.py picks it up): ~315 MB download.
        "mkl": ["mkl==2026.2.0"],
    },
)
