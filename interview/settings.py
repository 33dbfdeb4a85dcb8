"""Every setting of the project, read from the environment (or `.env`) in this one place."""

import os
import secrets
import tempfile
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# An optional .env in the project root; real environment variables win over it.
if (BASE_DIR / ".env").is_file():
    env.read_env(str(BASE_DIR / ".env"), overwrite=False)


def _local_secret_key() -> str:
    """Return the secret key kept in a git-ignored file, generating it on first start."""
    path = Path(env.str("SECRET_KEY_FILE", default=str(BASE_DIR / ".secret_key")))
    try:
        key = path.read_text().strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(50)
    # O_EXCL: two workers starting at once must agree on one key, so the loser re-reads.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


LOCAL_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=LOCAL_HOSTS)
# Serving hosts other than this machine, with debug off, is a production deployment.
PRODUCTION = env.bool("PRODUCTION", default=not DEBUG and any(h not in LOCAL_HOSTS for h in ALLOWED_HOSTS))
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured(
            "This is a production deployment (ALLOWED_HOSTS names hosts other than this machine) but "
            "SECRET_KEY is not set: it would run with the development key generated into .secret_key. "
            "Set SECRET_KEY to a long random value (python -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    SECRET_KEY = _local_secret_key()

# Where `manage.py serve` (and so `make run`) listens.
SERVER_HOST = env.str("HOST", default="0.0.0.0")
SERVER_PORT = env.int("PORT", default=3000)
# `manage.py serve` runs this many server processes on one socket (more than 1 needs
# REDIS_URL); a worker knows its number (1..WORKERS) from WORKER_INDEX, set by the parent.
SERVER_WORKERS = env.int("WORKERS", default=1)
WORKER_INDEX = env.int("WORKER_INDEX", default=0)

CLIENT_URL = env.str("CLIENT_URL", default="http://localhost:3001").rstrip("/")
CORS_ORIGINS = env.list("CORS_ORIGINS", default=["http://localhost:3001", "http://localhost:3000"])

APP_NAME = "Collaborative Interview API"
APP_VERSION = "1.0.0"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "interview",
    "sessions.apps.InterviewSessionsConfig",
    "collaboration.apps.CollaborationConfig",
    "execution.apps.ExecutionConfig",
]

# The session, auth and messages middlewares are Django's, skipped on API requests other
# than DELETE (interview.middleware.cookies_unused): only the admin and DELETE's staff check
# read cookies. CSRF stays Django's own (`check --deploy` looks for it; API views are exempt).
MIDDLEWARE = [
    "interview.middleware.BodySizeLimitMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "interview.middleware.StaticFilesMiddleware",
    "interview.middleware.CookieSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "interview.middleware.CookieAuthenticationMiddleware",
    "interview.middleware.CookieMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "interview.urls"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "interview.asgi.application"
# Threads that run the sync part of HTTP requests (interview/handler.py), each keeping its
# own database connection; async views (code execution) never wait for them.
HTTP_SYNC_THREADS = env.int("HTTP_SYNC_THREADS", default=1)
# The fast lane (interview/fastlane.py): the hot REST requests (sessions/fast_lane.py)
# answered at the ASGI edge with the headers Django gave for the same request headers; at
# most this many header sets kept (0 or FAST_LANE=false: every request goes through Django).
FAST_LANE = env.bool("FAST_LANE", default=True)
FAST_LANE_TEMPLATES = env.int("FAST_LANE_TEMPLATES", default=256)

# --- Stored and answered sizes ------------------------------------------------------------
# A history answer is at most this much JSON; older entries' code is left out beyond it.
HISTORY_MAX_RESPONSE_BYTES = env.int("HISTORY_MAX_RESPONSE_BYTES", default=1_048_576)
HISTORY_MAX_OFFSET = 1_000_000
# A session's operation log (the changes kept for rebasing late deltas) past this many bytes
# loses its oldest operations down to half of it; a delta based on them must resync. A
# two-hour interview of keystrokes is about 1 MB.
SESSION_MAX_LOG_BYTES = env.int("SESSION_MAX_LOG_BYTES", default=16 * 1_048_576)
# The code a session keeps besides its current text: its newest saved snapshots (older ones
# are deleted), and the newest history entries that carry code (snapshots and runs; older
# ones stay in the timeline without their code). A real interview saves a handful of times.
# A replay rebuilds a version from the newest checkpoint before it: one every this many versions.
DOCUMENT_CHECKPOINT_INTERVAL = max(1, env.int("DOCUMENT_CHECKPOINT_INTERVAL", default=100))
# What the timeline keeps of each run's stdout and stderr, and the most JSON one timeline page holds.
HISTORY_OUTPUT_BYTES = env.int("HISTORY_OUTPUT_BYTES", default=65_536)
TIMELINE_MAX_RESPONSE_BYTES = env.int("TIMELINE_MAX_RESPONSE_BYTES", default=1_048_576)
TIMELINE_DEFAULT_LIMIT = 100
TIMELINE_MAX_LIMIT = 500
# The interviewer's private notes on a session, at most this many bytes of UTF-8.
SESSION_NOTES_MAX_BYTES = env.int("SESSION_NOTES_MAX_BYTES", default=65_536)
SESSION_MAX_SNAPSHOTS = env.int("SESSION_MAX_SNAPSHOTS", default=100)
SESSION_MAX_HISTORY_CODES = env.int("SESSION_MAX_HISTORY_CODES", default=100)
# This process's cache of recent operations (an estimate of their memory).
OPERATION_CACHE_MAX_BYTES = env.int("OPERATION_CACHE_MAX_BYTES", default=64 * 1_048_576)
# The SQLite write-ahead log file is cut back to this size once checkpointed.
SQLITE_JOURNAL_SIZE_LIMIT = env.int("SQLITE_JOURNAL_SIZE_LIMIT", default=16 * 1_048_576)

# --- Database -------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
_db = DATABASES["default"]
# Connections stay open between requests and in the consumers' database thread:
# reconnecting per operation costs more than the operation itself.
_db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
_db["CONN_HEALTH_CHECKS"] = True
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # A concurrent server on SQLite: WAL lets readers run beside the writer, the busy
    # timeout makes a second writer wait instead of failing, and IMMEDIATE takes the
    # write lock at BEGIN so no transaction fails half-way with "database is locked".
    _db.setdefault("OPTIONS", {}).update(
        {
            "timeout": env.float("SQLITE_BUSY_TIMEOUT", default=30.0),
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
            f" PRAGMA journal_size_limit={SQLITE_JOURNAL_SIZE_LIMIT};",
        }
    )
    # Tests run on what users run: a file database with these same options (SQLite's
    # shared-cache memory database takes table locks that ignore the busy timeout), one
    # per test process, in the temp directory. conftest.py removes a leftover of a killed run.
    _db["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"interview-test-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channels -------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# A group message is dropped when a member's channel is full, so the capacity is far
# above what a client can have in flight; expiry bounds memory of a dead consumer.
CHANNEL_CAPACITY = env.int("CHANNEL_CAPACITY", default=10_000)
CHANNEL_EXPIRY = env.int("CHANNEL_EXPIRY", default=60)
# Group membership must outlive the longest session (168 h): the layers' default is a day.
CHANNEL_GROUP_EXPIRY = 8 * 24 * 3600
# Messages to other processes waiting for Redis (per process); past that they are dropped
# and the connections that miss one resync.
REDIS_OUTBOX_MAX = env.int("REDIS_OUTBOX_MAX", default=100_000)
if REDIS_URL:
    # In-process delivery as in-memory, Redis pub/sub between processes (collaboration.redis_layer).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "collaboration.redis_layer.RedisFanoutChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": env.str("REDIS_PREFIX", default="interview"),
                "capacity": CHANNEL_CAPACITY,
                "expiry": CHANNEL_EXPIRY,
                "group_expiry": CHANNEL_GROUP_EXPIRY,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "collaboration.layers.FastInMemoryChannelLayer",
            "CONFIG": {"capacity": CHANNEL_CAPACITY, "expiry": CHANNEL_EXPIRY, "group_expiry": CHANNEL_GROUP_EXPIRY},
        }
    }

# --- Limits (all overridable from the environment; the README lists them) -------------
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=1_048_576)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
MAX_CODE_BYTES = env.int("MAX_CODE_BYTES", default=262_144)
SESSION_DEFAULT_EXPIRES_HOURS = env.int("SESSION_DEFAULT_EXPIRES_HOURS", default=24)
SESSION_MAX_EXPIRES_HOURS = 168
HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 100

# Requests per client address for the expensive or writing endpoints ("N/second|minute|hour|day").
RATE_LIMITS = {
    "session_create": env.str("RATE_SESSION_CREATE", default="30/minute"),
    "code_save": env.str("RATE_CODE_SAVE", default="120/minute"),
    "execution": env.str("RATE_EXECUTION", default="30/minute"),
}
if REDIS_URL:
    # Rate-limit counters shared by every server process.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Reverse proxies in front of the server. Forwarded headers are trusted only when this is
# set, and then only the last NUM_PROXIES hops of X-Forwarded-For (never a client's own).
NUM_PROXIES = env.int("NUM_PROXIES", default=0)
if NUM_PROXIES < 0:
    raise ImproperlyConfigured("NUM_PROXIES must be 0 (no proxy in front) or the number of proxies.")

# --- REST framework and OpenAPI --------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["interview.parsers.SafeJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "interview.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "interview.schema.AutoSchema",
    "DATETIME_FORMAT": "iso-8601",
    # The client address for rate limits: the peer itself, or behind NUM_PROXIES proxies the
    # entry the outermost one added to X-Forwarded-For (0, not None: None trusts the header).
    "NUM_PROXIES": NUM_PROXIES,
}

SPECTACULAR_SETTINGS = {
    "TITLE": APP_NAME,
    "DESCRIPTION": (
        "Backend of a collaborative coding-interview platform: sessions with a shared, "
        "live-edited document, code snapshots and history, and sandboxed execution. "
        "The realtime half is a WebSocket at `/ws/sessions/{sessionId}`."
    ),
    "VERSION": APP_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["interview.schema.strip_optional_slash"],
    "ENUM_NAME_OVERRIDES": {
        "LanguageEnum": "sessions.models.Language",
        "RoleEnum": "sessions.models.Role",
        "ExecutionStatusEnum": "execution.sandbox.Status.values",
        "HealthStatusEnum": ["healthy", "unhealthy"],
    },
    "TAGS": [
        {"name": "sessions", "description": "Interview sessions, their code and snapshots."},
        {"name": "collaboration", "description": "Who is connected and what happened."},
        {"name": "execution", "description": "Run code in a sandbox."},
        {"name": "replay", "description": "After the interview: the timeline, past versions, the interviewer's notes."},
        {"name": "meta", "description": "Service information and health."},
    ],
}

# --- CORS -------------------------------------------------------------------------------
CORS_ALLOWED_ORIGINS = CORS_ORIGINS
CORS_ALLOW_CREDENTIALS = True
CSRF_TRUSTED_ORIGINS = CORS_ORIGINS

# --- Static files (admin CSS and the offline Swagger UI / ReDoc assets) ------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Internationalisation and time --------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging -----------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="info").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False}},
}

# --- Collaboration ------------------------------------------------------------------------
# Edits by one user closer together than this share one `edit` history entry.
HISTORY_COALESCE_SECONDS = env.float("HISTORY_COALESCE_SECONDS", default=30.0)
# A delta based on a version more than this many changes old must resync instead.
OT_MAX_REBASE_VERSIONS = env.int("OT_MAX_REBASE_VERSIONS", default=1000)
# A connection whose process has not refreshed it for this long counts as gone.
PRESENCE_TTL_SECONDS = env.int("PRESENCE_TTL_SECONDS", default=45)
PRESENCE_HEARTBEAT_SECONDS = env.int("PRESENCE_HEARTBEAT_SECONDS", default=15)
# A WebSocket that sends nothing for this long is closed.
WS_IDLE_TIMEOUT_SECONDS = env.float("WS_IDLE_TIMEOUT_SECONDS", default=60.0)
# Per-connection message rate: a token bucket refilled at RATE per second, holding BURST.
WS_RATE_LIMIT_PER_SECOND = env.float("WS_RATE_LIMIT_PER_SECOND", default=30.0)
WS_RATE_LIMIT_BURST = env.int("WS_RATE_LIMIT_BURST", default=60)
WS_MAX_MESSAGE_BYTES = env.int("WS_MAX_MESSAGE_BYTES", default=1_048_576)
# What daphne reads of one frame at all; above WS_MAX_MESSAGE_BYTES, so a frame between the
# two is answered INVALID_MESSAGE (the connection stays open) rather than dropped unread.
WS_MAX_FRAME_BYTES = env.int("WS_MAX_FRAME_BYTES", default=2 * WS_MAX_MESSAGE_BYTES)
if WS_MAX_FRAME_BYTES <= WS_MAX_MESSAGE_BYTES:
    raise ImproperlyConfigured("WS_MAX_FRAME_BYTES must be above WS_MAX_MESSAGE_BYTES.")
# Cursor moves are broadcast at once but stored at most this often per connection.
CURSOR_STORE_INTERVAL_SECONDS = env.float("CURSOR_STORE_INTERVAL_SECONDS", default=1.0)

# --- Work and memory one client may cause (each bound is in the README's Limits table) ---
# Changes in one delta code-update; more is INVALID_MESSAGE (send the full text instead).
WS_MAX_CHANGES = env.int("WS_MAX_CHANGES", default=1000)
# Rebase work of one delta: its changes times the versions it is behind, plus the changes
# of those versions (a unit is one to three microseconds); beyond, RESYNC_REQUIRED.
OT_MAX_REBASE_WORK = env.int("OT_MAX_REBASE_WORK", default=2_000)
# Rebase work the writer does in one round (one transaction) after its first change; a change
# that does not fit waits for the next round, where it goes first: an expensive change commits
# in a round of its own, and other sessions' changes in the round between two such.
WRITER_ROUND_WORK = env.int("WRITER_ROUND_WORK", default=1_000)
# Overload is refused, not queued: a change beyond these waiting (per session, in all) or one
# that waited this long for its round gets RATE_LIMIT_EXCEEDED "server busy" instead of being
# applied (past the two queue bounds a full text without seq supersedes instead: below).
WRITER_MAX_QUEUED_PER_SESSION = env.int("WRITER_MAX_QUEUED_PER_SESSION", default=100)
WRITER_MAX_QUEUED = env.int("WRITER_MAX_QUEUED", default=2_000)
WRITER_MAX_WAIT_SECONDS = env.float("WRITER_MAX_WAIT_SECONDS", default=0.5)
# A full text without seq supersedes its connection's waiting one (only the newer is applied)
# once the oldest change of its session has waited this long, or a bound above is reached.
WRITER_SUPERSEDE_AFTER_SECONDS = env.float("WRITER_SUPERSEDE_AFTER_SECONDS", default=0.25)
# An idle writer woken by a change waits this long for more to share the round (one
# transaction, one thread hop) unless several wait already; 0 commits each at once.
WRITER_GATHER_SECONDS = env.float("WRITER_GATHER_SECONDS", default=0.005)
# Bytes the server may hold unsent for one WebSocket (its transport's write buffer and its
# channel-layer queue); a connection beyond is closed with 1013 and its buffer dropped.
WS_MAX_BUFFERED_BYTES = env.int("WS_MAX_BUFFERED_BYTES", default=8 * 1024 * 1024)
# A client holding more than this unread is behind: it skips code-updates until it has read
# what it holds, then gets RESYNC_REQUIRED with the current document (below the bound above).
WS_RESYNC_BUFFERED_BYTES = env.int("WS_RESYNC_BUFFERED_BYTES", default=1024 * 1024)
# A ping answers after the acks of the code-updates its connection sent before it (so a
# client that waits for its pong never has more in flight), or after this many seconds.
WS_PONG_MAX_DELAY_SECONDS = env.float("WS_PONG_MAX_DELAY_SECONDS", default=5.0)

# --- Execution ----------------------------------------------------------------------------
# "bwrap": namespaces through bubblewrap (the default). "unsafe-rlimits-only": an explicit
# operator choice to run without namespaces (limits only) where bubblewrap cannot work.
EXECUTION_SANDBOX = env.str("EXECUTION_SANDBOX", default="bwrap")
EXECUTION_MAX_CONCURRENT = env.int("EXECUTION_MAX_CONCURRENT", default=os.cpu_count() or 1)
# Runs wait (fairly across sessions and addresses) up to EXECUTION_QUEUE_WAIT seconds for a
# slot; at most EXECUTION_MAX_QUEUE wait, of which one session or address at most
# EXECUTION_MAX_QUEUE_PER_CLIENT; the rest get 429 at once.
EXECUTION_MAX_QUEUE = env.int("EXECUTION_MAX_QUEUE", default=8 * (os.cpu_count() or 1))
EXECUTION_MAX_QUEUE_PER_CLIENT = env.int("EXECUTION_MAX_QUEUE_PER_CLIENT", default=4 * (os.cpu_count() or 1))
EXECUTION_QUEUE_WAIT = env.float("EXECUTION_QUEUE_WAIT", default=10.0)
# Sandboxes per language built ahead of time, so a run finds its sandbox ready (0: none).
EXECUTION_SPARES = env.int("EXECUTION_SPARES", default=2)
EXECUTION_DEFAULT_TIMEOUT = 5
EXECUTION_MAX_TIMEOUT = 10
EXECUTION_COMPILE_TIMEOUT = env.float("EXECUTION_COMPILE_TIMEOUT", default=15.0)
EXECUTION_MEMORY_MB = env.int("EXECUTION_MEMORY_MB", default=256)
EXECUTION_MAX_PROCESSES = env.int("EXECUTION_MAX_PROCESSES", default=64)
EXECUTION_OUTPUT_BYTES = env.int("EXECUTION_OUTPUT_BYTES", default=1_000_000)
EXECUTION_FILE_SIZE_MB = env.int("EXECUTION_FILE_SIZE_MB", default=16)
EXECUTION_OPEN_FILES = env.int("EXECUTION_OPEN_FILES", default=64)
EXECUTION_UID_BASE = env.int("EXECUTION_UID_BASE", default=60000)
# One uid per concurrent run across every server process on the host.
EXECUTION_UID_COUNT = env.int("EXECUTION_UID_COUNT", default=256)
EXECUTION_CGROUPS = env.bool("EXECUTION_CGROUPS", default=True)
EXECUTION_COMPILE_MEMORY_MB = env.int("EXECUTION_COMPILE_MEMORY_MB", default=1024)
# Each run's own filesystem (RAM: a tmpfs) holds /box, /tmp and /dev/shm, one budget for all
# three; EXECUTION_TMPFS_MB, the older name of the size (then of /tmp and /dev/shm each), still counts.
EXECUTION_DISK_MB = env.int("EXECUTION_DISK_MB", default=env.int("EXECUTION_TMPFS_MB", default=64))
EXECUTION_DISK_INODES = env.int("EXECUTION_DISK_INODES", default=4096)
EXECUTION_WORK_ROOT = env.str("EXECUTION_WORK_ROOT", default="") or None
MAX_STDIN_BYTES = env.int("MAX_STDIN_BYTES", default=262_144)

# --- Security -------------------------------------------------------------------------------
# Headers on every response; HTTPS-only behaviour by default in production (`check --deploy`
# is then clean), off for the local http://localhost:3000 that `make run` serves.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^api/health$"]
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=PRODUCTION)
if env.bool("BEHIND_HTTPS_PROXY", default=False):
    # The proxy terminates TLS and says so; without this an SSL redirect would loop.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
