"""A Flask (WSGI) app."""

import os

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def index():
    return "hello from flask\n"


@app.get("/info")
def info():
    return jsonify(pid=os.getpid(), framework="flask")
