#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the small zip archives tests/models/zip_archive_test.cpp reads: a good one and
one of each hostile kind. Run from the repository root: tools/gen_zip_fixtures.py"""
import os
import stat
import zipfile

OUT = "tests/models/fixtures/zip"
os.makedirs(OUT, exist_ok=True)

with zipfile.ZipFile(f"{OUT}/good.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("metadata.json", '{"model_name": "m"}')
    z.writestr("sub/", "")
    z.writestr("sub/a.txt", "hello " * 100)

for name, member in [("traversal.zip", "../evil.txt"), ("absolute.zip", "/etc/evil.txt"),
                     ("nested_traversal.zip", "a/../../evil.txt")]:
    with zipfile.ZipFile(f"{OUT}/{name}", "w") as z:
        z.writestr(member, "x")

with zipfile.ZipFile(f"{OUT}/symlink.zip", "w") as z:
    info = zipfile.ZipInfo("link")
    info.create_system = 3  # unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z.writestr(info, "/etc/passwd")

# 8 MiB of zeros compress to a few KB: with an 1 MiB cap this is a bomb.
with zipfile.ZipFile(f"{OUT}/bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("zeros", b"\0" * (8 << 20))

with open(f"{OUT}/good.zip", "rb") as f:
    data = f.read()
with open(f"{OUT}/truncated.zip", "wb") as f:
    f.write(data[: len(data) // 2])

# A model-server style zip of a weight model, and the same inside a top-level folder.
META = '{"model_name": "SGDRegressorTrainer_1", "model_class": "scikit", "model_file": "SGDRegressorTrainer_1.json", "mae": 4.5}'
WEIGHTS = ('{"package": {"All_Weights": {"Bias_Weight": 10.0, "Categorical_Variables": {}, '
           '"Numerical_Variables": {"bpf_cpu_time_ms": {"scale": 2.0, "weight": 3.0}}}}}')
with zipfile.ZipFile(f"{OUT}/weight_model.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("metadata.json", META)
    z.writestr("SGDRegressorTrainer_1.json", WEIGHTS)
with zipfile.ZipFile(f"{OUT}/weight_model_in_folder.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("SGDRegressorTrainer_1/metadata.json", META)
    z.writestr("SGDRegressorTrainer_1/SGDRegressorTrainer_1.json", WEIGHTS)
