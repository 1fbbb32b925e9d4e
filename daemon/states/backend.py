"""Steps 2 and 3: the database and the backend, each phase a focused slice of files."""

from daemon.states.base import Phase, PhaseFiles, StepGroup

DATABASE = StepGroup(2, "DATABASE SCHEMA", "Database schema generated")
BACKEND = StepGroup(3, "BACKEND API GENERATION (Multi-phase)", "Backend API generated")

BACKEND_PHASES = (
    Phase(
        name="DB",
        step="2",
        title="Database schema: schema files, migrations, seed data",
        group=DATABASE,
        progress="Generating database schema, migrations and seed data",
        noun="database",
        instructions=(
            "Write the database layer files: an SQL schema for every table in the plan, "
            "an initial migration, and seed data. Put them under database/."
        ),
        max_tokens=2000,
        needs=("ARCH",),
        output_model=PhaseFiles,
        area="database/",
    ),
    Phase(
        name="BE_CORE",
        step="3.1",
        title="Backend core: entry point, configuration, dependency file",
        group=BACKEND,
        progress="Generating backend core (entry point, configuration, dependencies)",
        noun="core",
        instructions=(
            "Write the backend's entry point (the FastAPI app that includes every router "
            "named in the plan), its settings module, the database session module and "
            "requirements.txt. Put them under backend/."
        ),
        max_tokens=3000,
        needs=("ARCH",),
        output_model=PhaseFiles,
        area="backend/",
    ),
    Phase(
        name="BE_MODELS",
        step="3.2",
        title="Backend models and request/response schemas",
        group=BACKEND,
        progress="Generating data models and schemas",
        noun="model",
        instructions=(
            "Write the ORM models, one module per table of the plan, and the pydantic "
            "request/response schemas for every endpoint. Import the declarative base and "
            "session from the core files listed in the manifest."
        ),
        max_tokens=4000,
        needs=("DB", "BE_CORE"),
        output_model=PhaseFiles,
        area="backend/",
    ),
    Phase(
        name="BE_ROUTES",
        step="3.3",
        title="Backend route handlers and services (CRUD, business logic)",
        group=BACKEND,
        progress="Generating route handlers and services",
        noun="route",
        instructions=(
            "Write one router module per resource, implementing every endpoint of the plan, "
            "and the service functions behind them. Import models and schemas exactly as "
            "the manifest names them."
        ),
        max_tokens=5000,
        needs=("BE_MODELS",),
        output_model=PhaseFiles,
        area="backend/",
    ),
    Phase(
        name="BE_UTILS",
        step="3.4",
        title=(
            "Backend middleware and utilities (JWT auth, errors, DB, logging, CORS, rate limits)"
        ),
        group=BACKEND,
        progress="Generating middleware and utilities",
        noun="utility",
        instructions=(
            "Write the backend's cross-cutting modules: JWT authentication and the current-"
            "user dependency, error handlers, logging setup, CORS and rate-limit middleware."
        ),
        max_tokens=3000,
        needs=("BE_CORE",),
        output_model=PhaseFiles,
        area="backend/",
    ),
)
