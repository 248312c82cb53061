from services.member_retargeting.app import create_app

app = create_app()
