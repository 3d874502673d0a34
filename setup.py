"""Builds tfkd and its C++ kernel with CMake.

Adapted from pybind11's cmake_example: setuptools drives CMake, which
compiles ``csrc/`` into the Python extension module ``tfkd._C`` (the NumPy
entry) and the TensorFlow op library ``tfkd/_tf_ops.so`` (the "cpp" backend).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
OP_LIBRARY = "_tf_ops.so"  # CMake target _tf_ops


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
        cmake_args += tensorflow_cmake_args()
        if os.environ.get("TFKD_SANITIZE"):
            cmake_args.append("-DTFKD_SANITIZE=ON")
        subprocess.run(["cmake", str(ROOT), *cmake_args], cwd=build_dir, check=True)
        jobs = str(os.cpu_count() or 1)
        subprocess.run(["cmake", "--build", ".", "--config", config, "-j", jobs],
                       cwd=build_dir, check=True)

    # The op library is built beside tfkd._C but is no Python module: list it
    # too, so editable installs copy it into the source tree.
    def _op_library(self) -> tuple[str, str]:
        return (os.path.join(self.build_lib, "tfkd", OP_LIBRARY),
                os.path.join(self.get_finalized_command("build_py").get_package_dir("tfkd"),
                             OP_LIBRARY))

    def copy_extensions_to_source(self) -> None:
        super().copy_extensions_to_source()
        self.copy_file(*self._op_library(), level=self.verbose)

    def _get_output_mapping(self):
        yield from super()._get_output_mapping()
        if self.inplace:
            yield self._op_library()


def tensorflow_cmake_args() -> list[str]:
    """Where the installed TensorFlow keeps its headers and library, and its ABI flags.

    Asked of a separate interpreter, so this process never imports
    TensorFlow. The op library must match the TensorFlow it is loaded into.
    """
    query = ("import json, tensorflow as tf; s = tf.sysconfig; print(json.dumps("
             "[s.get_include(), s.get_lib(), s.get_compile_flags(), s.get_link_flags()]))")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", query], capture_output=True, text=True,
                            env=env, check=True)
    include, lib, compile_flags, link_flags = json.loads(result.stdout.strip().splitlines()[-1])
    defines = [f for f in compile_flags if f.startswith("-D")]
    libs = [f for f in link_flags if f.startswith("-l")]
    return [f"-DTFKD_TF_INCLUDE_DIR={include}", f"-DTFKD_TF_LIB_DIR={lib}",
            f"-DTFKD_TF_COMPILE_FLAGS={';'.join(defines)}",
            f"-DTFKD_TF_LINK_LIBS={';'.join(libs)}"]


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
