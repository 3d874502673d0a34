"""Builds tfkd and its C++ extension ``tfkd._C`` with CMake (pybind11).

Adapted from pybind11's cmake_example: setuptools drives CMake, which
compiles ``csrc/`` into one Python extension module.
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_dir = Path(self.build_temp).resolve() / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)
        config = "Debug" if self.debug else "Release"
        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={config}",
        ]
        if os.environ.get("TFKD_SANITIZE"):
            cmake_args.append("-DTFKD_SANITIZE=ON")
        subprocess.run(["cmake", str(ROOT), *cmake_args], cwd=build_dir, check=True)
        jobs = str(os.cpu_count() or 1)
        subprocess.run(["cmake", "--build", ".", "--config", config, "-j", jobs],
                       cwd=build_dir, check=True)


AGENTS_NEEDS = [
    # tf-agents==0.19.0 itself must be installed with `pip install --no-deps`:
    # its metadata pins cannot be resolved beside TF 2.21 (see README).
    "tf-keras==2.21.*",
    "tensorflow-probability==0.25.*",
    "gym==0.23.1",
    "pillow",
    "gin-config",
    "cloudpickle",
]

setup(
    name="tfkd",
    version="0.1.0",
    description="Knowledge distillation for reinforcement learning in TensorFlow/Keras",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tfkd", "tfkd.*"]),
    ext_modules=[CMakeExtension("tfkd._C")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow==2.21.*",
        "tensorboard",
        "numpy",
        "gymnasium>=1.0",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        "agents": AGENTS_NEEDS,
        "box2d": ["gymnasium[box2d]>=1.0"],
        "atari": ["ale-py", "opencv-python-headless"],
        "test": ["pytest", "hypothesis", "scikit-learn"],
    },
    entry_points={"console_scripts": ["tfkd=tfkd.cli:main"]},
    zip_safe=False,
)
