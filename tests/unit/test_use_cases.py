"""The use-case suite on eventsourcing's POPO persistence, with fakes of the ports: no PostgreSQL."""

from application.mediatasks import MediaTasks
from tests.support.use_cases import MediaTasksUseCases


class TestUseCasesInMemory(MediaTasksUseCases):
    def make_app(self) -> MediaTasks:
        return MediaTasks(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
