"""Files: upload (multipart), get, list, delete, and the download of an uploaded file."""

from __future__ import annotations

import json

from aiohttp import BodyPartReader, web

from .common import ENGINE, api, bad_request, base_url, json_response, not_found, one_page


@api("read", "files.create")
async def create_file(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    if not request.content_type.startswith("multipart/"):
        return bad_request("Send the file as multipart/form-data in a part named 'content'.")
    content, name, content_type, metadata = None, "file", "application/octet-stream", {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue  # a multipart inside the multipart: no file part of the API's
        if part.name == "content":
            name = part.filename or name
            content_type = part.headers.get("Content-Type", content_type)
            content = await part.read(decode=False)
        elif part.name == "metadata":
            try:
                metadata = json.loads(await part.text())
            except json.JSONDecodeError:
                return bad_request("metadata must be JSON.")
    if content is None:
        return bad_request("Missing multipart part 'content'.")
    stored = engine.store_file(name, content_type, bytes(content), metadata, base_url(request))
    return json_response(stored.to_json(), status=201)


@api("read", "files.get")
async def get_file(request: web.Request) -> web.StreamResponse:
    stored = request.app[ENGINE].files.get(request.match_info["id"])
    if stored is None:
        return not_found()
    return json_response(stored.to_json())


@api("read", "files.list")
async def list_files(request: web.Request) -> web.StreamResponse:
    files = [f.to_json() for f in reversed(list(request.app[ENGINE].files.values()))]
    return one_page(files)


@api("read", "files.delete")
async def delete_file(request: web.Request) -> web.StreamResponse:
    if request.app[ENGINE].files.pop(request.match_info["id"], None) is None:
        return not_found()
    return web.Response(status=204)


async def download_file(request: web.Request) -> web.StreamResponse:
    stored = request.app[ENGINE].files.get(request.match_info["id"])
    if stored is None:
        raise web.HTTPNotFound()
    return web.Response(body=stored.data, content_type=stored.content_type)


def add_routes(router: web.UrlDispatcher) -> None:
    """The files API's routes and an uploaded file's download."""
    router.add_post("/v1/files", create_file)
    router.add_get("/v1/files", list_files)
    router.add_get("/v1/files/{id}", get_file)
    router.add_delete("/v1/files/{id}", delete_file)
    router.add_get("/v1/files/{id}/download", download_file)
