"""Builds tfkd's C++ kernel with CMake; the project's metadata and
dependencies are in pyproject.toml.

Adapted from pybind11's cmake_example: setuptools drives CMake, which
compiles ``csrc/`` into the Python extension module ``tfkd._C`` (the NumPy
entry) and the TensorFlow op library ``tfkd/_tf_ops.so`` (the "cpp" backend).
The build asks the installed TensorFlow for its headers and ABI flags, so it
runs without build isolation, after TensorFlow is installed (see the Makefile).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
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


setup(
    ext_modules=[CMakeExtension("tfkd._C")],
    cmdclass={"build_ext": CMakeBuild},
)
