"""Make the architectures of this folder importable by its test files."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
