from offload.cli.worker import without_processes


def test_children_get_the_command_line_without_processes() -> None:
    argv = ["worker", "app:app", "-c", "2", "--processes", "2", "-Q", "a,b", "--lease", "2"]
    assert without_processes(argv) == ["worker", "app:app", "-c", "2", "-Q", "a,b", "--lease", "2"]
    assert without_processes(["worker", "a:b", "--processes=4", "-p3", "-c", "4"]) == [
        "worker",
        "a:b",
        "-c",
        "4",
    ]
