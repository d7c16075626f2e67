"""JupyterHub's configuration for one class of the course (deploy/install_class.py writes the class.json it reads).

Run by deploy/start_hub.sh as root: ``jupyterhub -f deploy/jupyterhub_config.py`` with ``LORA_CLASS_CONFIG``
naming class.json. Why each choice:

- **Loopback only.** The proxy listens on 127.0.0.1 (put a TLS front end such as nginx or Caddy before it for a
  real class: TLJH does this); the hub's API and the proxy's API listen on ports below 1024, which only root can
  bind, so no student's process can take either port over, even while the hub restarts; and the hub, the proxy and
  the students' servers talk to each other over mutual TLS (``internal_ssl``), so a student's process that binds a
  port a dead server left gets nothing from the proxy.
- **PAM with system users.** Every student is a Unix account, so the operating system keeps students apart (their
  homes are 0700, their servers and kernels run as themselves) and nbgrader's exchange knows who handed in what.
  Only members of the class's two groups may log in.
- **Two modes.** A student's server gets the learner configuration (nbgrader's instructor tools off, its
  Assignments panel on: fetch, validate, submit); the instructor's gets all of nbgrader and the course folder.
  Both run the course's one environment (``jupyterhub-singleuser`` from the lock).
- **Limits per student** (``ClassSpawner``): processes, priority under memory pressure and for the CPU; not a
  memory or CPU share (that needs systemd or Kubernetes).
- **A restart loses nothing.** The proxy and the students' servers outlive the hub (``cleanup_*`` off), and the
  hub's database and cookie secret are files in the state folder (root's, 0700): a restarted hub finds the
  servers still running and the students still logged in. Submissions are files in the exchange, never in the hub.
"""
import grp
import json
import os
import pwd
import resource
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner

CLASS = json.loads(Path(os.environ.get("LORA_CLASS_CONFIG", "/etc/lora-class/class.json")).read_text())
STATE = Path(CLASS["state"])
VENV = Path(CLASS["venv"])

c = get_config()  # noqa: F821  (JupyterHub's)

c.JupyterHub.bind_url = f"http://127.0.0.1:{CLASS['port']}"
c.JupyterHub.hub_bind_url = f"https://127.0.0.1:{CLASS['hub_port']}"          # TLS: internal_ssl below
c.ConfigurableHTTPProxy.api_url = f"https://127.0.0.1:{CLASS['proxy_api_port']}"
c.ConfigurableHTTPProxy.command = [CLASS["proxy"]]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")
c.ConfigurableHTTPProxy.should_start = True
c.JupyterHub.cleanup_proxy = False
c.JupyterHub.cleanup_servers = False
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
# Mutual TLS between the hub, the proxy and every student's server, each with a certificate from the hub's own CAs
# (a student server's key goes to the student's ~/.jupyterhub, 0700). On one machine every account can bind any free
# port: without this, a student who binds the port a classmate's dead server left would receive the classmate's
# requests (and server cookie) from the proxy; with it, the proxy talks only to servers holding a certificate the hub
# signed. The two internal URLs above must then say https.
c.JupyterHub.internal_ssl = True
c.JupyterHub.internal_certs_location = str(STATE / "internal-ssl")

c.JupyterHub.authenticator_class = "pam"
c.LocalAuthenticator.create_system_users = False  # accounts are made by the administrator (useradd), never by the hub
c.LocalAuthenticator.allowed_groups = {CLASS["students_group"], CLASS["instructors_group"]}
c.Authenticator.admin_users = set()  # nobody administers the hub through the web; root runs it
c.JupyterHub.admin_access = False


class ClassSpawner(LocalProcessSpawner):
    """JupyterHub's LocalProcessSpawner, with the limits one machine can set per student without systemd.

    Set as root, before the server becomes the student (so the student cannot raise them), inherited by the
    server, its kernels and everything they start (the independent red team, docs/reviews/hub_red_team_independent.md):

    - at most ``max_processes`` processes and threads for the student's account (RLIMIT_NPROC, counted by the kernel
      per user): a fork bomb stops there instead of taking the machine's process table;
    - a raised ``oom_score_adj``: when memory runs out, the kernel's out-of-memory killer takes a student's process
      (the largest) before the hub or the proxy; a student cannot lower it again;
    - a lower CPU priority (``nice``): a student's busy loops cannot starve the hub and the proxy.

    Not set: a memory or CPU share per student (that needs cgroups: TLJH's systemdspawner, or Kubernetes), and disk
    quotas (the file system's). docs/instructor_guide.md, "Running a class", says what to configure.
    """

    def make_preexec_fn(self, name):
        become_student = super().make_preexec_fn(name)
        limits = CLASS.get("limits", {})
        nproc = int(limits.get("max_processes", LIMITS["max_processes"]))
        oom = int(limits.get("oom_score_adj", LIMITS["oom_score_adj"]))
        niceness = int(limits.get("nice", LIMITS["nice"]))

        def preexec():
            with open("/proc/self/oom_score_adj", "w") as f:   # as root: also the floor the student cannot go below
                f.write(str(oom))
            os.nice(niceness)
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            become_student()
        return preexec


#: the per-student limits (class.json's "limits" overrides each): what ClassSpawner sets
LIMITS = {"max_processes": 512, "oom_score_adj": 500, "nice": 5}
c.JupyterHub.spawner_class = ClassSpawner
c.Spawner.cmd = [str(VENV / "bin" / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 180   # a busy two-core server starts JupyterLab in 5 to 60 s
c.Spawner.http_timeout = 180


def _is_instructor(name: str) -> bool:
    group = grp.getgrnam(CLASS["instructors_group"])
    try:
        primary = pwd.getpwnam(name).pw_gid == group.gr_gid
    except KeyError:
        primary = False
    return primary or name in group.gr_mem


def _mode_environment(spawner):
    """Each server's Jupyter configuration path: the class's common settings and its mode's (learner or instructor)."""
    modes = CLASS["jupyter_config"]
    mode = "instructor" if _is_instructor(spawner.user.name) else "learner"
    spawner.environment.update({
        "JUPYTER_CONFIG_PATH": os.pathsep.join([modes[mode], modes["common"]]),
        "PATH": os.pathsep.join([str(VENV / "bin"), "/usr/local/bin", "/usr/bin", "/bin"]),
        "LORA_EDU_MODE": mode,
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",  # one thread a kernel: many share the cores
    })
    if CLASS.get("model_cache"):
        spawner.environment["LORA_EDU_CACHE"] = CLASS["model_cache"]  # notebook 07's converted model, shared read-only


c.Spawner.pre_spawn_hook = _mode_environment
