from services.traffic_intake.app import create_app

app = create_app()
