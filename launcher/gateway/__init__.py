"""One endpoint for every model (`launcher serve`): routing by model name, models started on demand and let go by
the estimate. models_file: what to serve; placement: which idle models make room (pure); backends: starting, waking,
sleeping, stopping through the launching API; app: the HTTP side; metrics and status_page: what it shows."""
