"""The camera server (server.py: cameras -> ZeroMQ) and its consumer (stream.py: CameraStream,
newest frame per camera, staleness and dead-camera reports). docs/camera_server.md."""
