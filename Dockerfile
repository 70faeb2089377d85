# prefstudio web app and workers. CPU torch by default; GPU hosts build with
# --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 (same torch version).
FROM python:3.11-slim AS app

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=prefstudio.settings

RUN groupadd --system prefstudio && useradd --system --gid prefstudio --home /app prefstudio
WORKDIR /app

COPY requirements.txt .
RUN pip install --extra-index-url "$TORCH_INDEX" -r requirements.txt

COPY --chown=prefstudio:prefstudio . .
# collectstatic needs settings to load; these throwaway values never reach a running container.
RUN DEBUG=false SECRET_KEY=collectstatic-only-$(python -c 'import secrets; print(secrets.token_hex(24))') \
    python manage.py collectstatic --noinput \
 && mkdir -p /app/var/media /app/var/artifacts /app/var/cache && chown -R prefstudio:prefstudio /app/var

USER prefstudio
EXPOSE 8000
# Workers override the command: python manage.py rqworker default gpu
# Workers, worker class and timeouts: gunicorn.conf.py; WEB_CONCURRENCY sets the number of workers.
CMD ["gunicorn", "prefstudio.wsgi:application", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
