from services.lead_scoring.app import create_app

app = create_app()
