import subprocess
import sys

import kdnas_deploy


def test_every_api_name_resolves():
    for name in kdnas_deploy.__all__:
        assert getattr(kdnas_deploy, name) is not None, name


def test_import_is_light():
    code = ("import sys, kdnas_deploy; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
