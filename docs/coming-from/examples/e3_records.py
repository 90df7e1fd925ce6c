"""e3-core's event example in platybus: a record, its handlers from the environment, a child."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from platybus.notify.manager import ENV_VAR, NotifierManager
from platybus.notify.records import EventRecord

work = Path(tempfile.mkdtemp())
(work / "build.log").write_text("ok\n")

with EventRecord("build.done", uid="build-1") as record:
    record.build = 42
    record.attach_file(work / "build.log", name="log")
record.set_formatter("build", lambda n: f"#{n}")
print(record.as_dict()["values"], list(record.get_attachments()))

# The parent's notifiers, handed to a child through the environment.
manager = NotifierManager.from_environment({ENV_VAR: f"file={work / 'events'}|log"})
env = {**os.environ, ENV_VAR: manager.environment()}
child = ("from platybus.notify.manager import send_event\n"
         "from platybus.notify.records import EventRecord\n"
         "with EventRecord('test.done', uid='t-1') as r:\n"
         "    r.passed = 10\n"
         "print(send_event(r))\n")
out = subprocess.run([sys.executable, "-c", child], env=env, check=True,  # noqa: S603
                     capture_output=True, text=True).stdout
print(out.strip())
assert (work / "events" / "t-1.json").exists()
