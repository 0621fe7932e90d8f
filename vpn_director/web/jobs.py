"""Long operations (an Xray switch, a server test) as jobs: started in a thread, polled by id."""

import secrets
import threading
import time

KEEP = 20


class Jobs:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_id = {}

    def start(self, what, fn):
        """Run fn() -> result dict in a thread; returns the job as it is now."""
        job = {"id": secrets.token_hex(8), "what": what, "state": "running", "started": time.time()}
        with self.lock:
            self.by_id[job["id"]] = job
            for old in sorted(self.by_id.values(), key=lambda j: j["started"])[:-KEEP]:
                del self.by_id[old["id"]]

        def work():
            try:
                result, state = fn(), "done"
            except Exception as e:  # reported to the page; the work's own layer logged it
                result, state = {"error": str(e)}, "failed"
            with self.lock:
                job.update(result=result, state=state, finished=time.time())
        threading.Thread(target=work, name="job " + what, daemon=True).start()
        return self.get(job["id"])

    def get(self, job_id):
        with self.lock:
            job = self.by_id.get(job_id)
            return dict(job) if job else None
