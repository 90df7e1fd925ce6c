"""The file transfer job API in platybus: configure a job, run it, read its result and extra."""

import sys
import tempfile
from pathlib import Path

from platybus.plugins.transfer import FileTags, configure, set_sigterm_handler, transfer

work = Path(tempfile.mkdtemp())
for folder in ("outbox", "inbox", "copy"):
    (work / folder).mkdir()
(work / "outbox" / "sales.csv").write_text("a,b\n1,2\n")
(work / "config.yaml").write_text(f"""
node: {{id: mover, data_dir: {work / "data"}}}
discovery: {{enabled: false}}
plugins:
  transfer:
    "x:report": {{owner: ops, format: text}}
    jobs:
      reports:
        source: {work / "outbox"}
        target: {work / "inbox"}
        patterns: ["*.csv"]
        "x:report": {{format: json}}
""")

set_sigterm_handler()  # SIGTERM now raises TransferTerminated (exit code 5)
run, extra = configure(work / "config.yaml", "reports")
print("extra:", extra)
result, exit_code = run()
for path, info, tag in result.file_list:
    print(tag.value, path, info["size"], "bytes", tag is FileTags.TRANSFERRED)
print("files", result.files_cnt, "errors", result.src_error_cnt, result.tgt_error_cnt)

once = transfer(str(work / "outbox"), str(work / "copy"), collect_data=True)
print("once:", once.files_cnt, [tag.value for _, _, tag in once.file_list])
sys.exit(exit_code)
