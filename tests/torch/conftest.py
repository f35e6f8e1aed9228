"""Make the float64 reference helpers of this folder importable by the other test files."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
