"""The distributed run (issue 17): Airflow's scheduler, dag-processor, api-server and two Celery
workers as separate processes, PostgreSQL metadata and a Redis broker, all on loopback.

``services`` starts the servers, ``cluster`` the Airflow components and the one function
that names every configuration key they get (``cluster.cluster_env``), which the deployment
files under ``infra/`` must carry too (``test_deployment_files``)."""
