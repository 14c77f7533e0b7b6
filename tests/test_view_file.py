"""The one notebook file a kernel with no Jupyter server names (:class:`~share_magic.helper.sources.FileSource`), as a
view reads it when it is not what it was: a link put in its place, a pipe, JSON that is no notebook, not JSON at all."""
from __future__ import annotations

import asyncio
import os

import nbformat
import pytest
from harness import wait_for

from share_magic.helper.grants import Local
from share_magic.helper.sources import FileSource
from share_magic.helper.view import NotebookView


def save(path, *texts: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell(text) for text in texts]
    nbformat.write(notebook, str(path))


@pytest.fixture
def view_of():
    views = []

    def make(path) -> NotebookView:
        view = NotebookView(FileSource(str(path)), "/")
        views.append(view)
        return view

    yield make
    for view in views:
        view.close()


def test_a_link_put_in_place_of_the_notebook_is_not_read(tmp_path) -> None:
    """Whoever can write the notebook's folder cannot have the view show a file of the owner's they cannot read."""
    shown, private = tmp_path / "shown.ipynb", tmp_path / "private.ipynb"
    save(shown, "public")
    save(private, "PRIVATE")
    source = FileSource(str(shown))
    assert "public" in str(source.read()[1])
    shown.unlink()
    shown.symlink_to(private)
    with pytest.raises(OSError):
        source.read()
    shown.unlink()
    os.mkfifo(shown)  # a pipe would hold the view's reader forever
    with pytest.raises(OSError, match="not a regular file"):
        source.read()


def test_a_notebook_that_is_a_link_when_the_share_starts_is_read_through_it(tmp_path) -> None:
    real = tmp_path / "real.ipynb"
    save(real, "through the link")
    (tmp_path / "talk.ipynb").symlink_to(real)
    source = FileSource(str(tmp_path / "talk.ipynb"))
    assert source.name == "talk.ipynb" and "through the link" in str(source.read()[1])


def test_json_that_is_no_notebook_does_not_stop_the_view(tmp_path, view_of, capfd) -> None:
    shown = tmp_path / "shown.ipynb"
    save(shown, "first")
    view = view_of(shown)
    wait_for(lambda: view.rendered, 30, "the first render")
    shown.write_text("[1]")  # valid JSON, no notebook: nbformat raises AttributeError
    logged: list[str] = []
    wait_for(lambda: logged.append(capfd.readouterr().err) or "AttributeError" in "".join(logged), 10,
             "the view to log the unreadable file")
    save(shown, "first", "second")
    wait_for(lambda: len(view.rendered.cells) == 2, 10, "the view to follow the next save")


def test_a_reader_is_not_told_what_an_unreadable_file_holds(tmp_path, view_of, capfd) -> None:
    """nbformat's NotJSONError quotes the file's first bytes, which no blanking has seen."""
    shown = tmp_path / "shown.ipynb"
    shown.write_text('version: "2"\nauthtoken: SECRET-IN-THE-FILE\n')
    view = view_of(shown)
    answers = []

    class Answer:
        async def finish(self, data: bytes) -> None:
            answers.append(data)

        async def run(self, function, *args):
            return function(*args)

    request = Local(None, "GET", view.page_path, [])  # type: ignore[arg-type]
    asyncio.run(view.respond(request, Answer()))
    assert answers[0].startswith(b"HTTP/1.1 503") and b"SECRET" not in answers[0] and b"authtoken" not in answers[0]
    assert "NotJSONError" in capfd.readouterr().err  # the owner's log keeps the trace
